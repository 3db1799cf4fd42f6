// Command fetch is the floor bench/edge measures scrape-once against: it fetches every
// URL given on its command line concurrently with net/http, gzip accepted (with
// -identity first: the body as it is, as enable_compression: false asks), reads each
// body to the end, and exits; it fails if any fetch does not answer 200.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	urls, identity := os.Args[1:], false
	if len(urls) > 0 && urls[0] == "-identity" {
		urls, identity = urls[1:], true
	}
	if err := fetchAll(ctx, urls, identity); err != nil {
		fmt.Fprintf(os.Stderr, "fetch: %v\n", err)
		os.Exit(1)
	}
}

func fetchAll(ctx context.Context, urls []string, identity bool) error {
	errs := make([]error, len(urls))
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fetch(ctx, u, identity)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// fetch reads url's body; the transport asks for gzip and decompresses it, as a scrape
// does, unless identity asks for the body as it is.
func fetch(ctx context.Context, url string, identity bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	if identity {
		req.Header.Set("Accept-Encoding", "identity")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("fetch %s: read body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch %s: status %s", url, resp.Status)
	}
	return nil
}
