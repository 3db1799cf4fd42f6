// Command target serves the captured expositions in a directory as exporters serve
// them, one per path (/node_exporter for node_exporter.prom), for the quick start.
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	dir := flag.String("dir", "tests/testdata", "directory of .prom captures")
	flag.Parse()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		name := strings.Trim(filepath.Base(r.URL.Path), "/")
		b, err := os.ReadFile(filepath.Join(*dir, name+".prom"))
		if err != nil || name == "" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write(b)
	})
	log.Fatal(http.ListenAndServe(*listen, nil))
}
