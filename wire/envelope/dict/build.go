//go:build ignore

// build writes exposition.dict, the zstd dictionary that wire/envelope embeds, from the
// expositions in corpus/ (README.md says where each came from). Run it here:
//
//	go run build.go
//
// The dictionary is raw content, not a trained zstd dictionary: the metric families
// (HELP and TYPE lines and the series names, without values) that appear in the most
// corpus files, until it is full, the most common last, where zstd's offsets to them are
// shortest. On these captures that compresses better than dict.BuildZstdDict's output
// (see wire/envelope's BenchmarkDictionary), since what an exposition repeats from another
// is whole lines, not short fragments.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// family is one metric family as the corpus has it: its HELP line, its TYPE line and the
// first few distinct series names, each followed by the space before its value.
type family struct {
	help, typ string
	series    []string
	files     int // corpus files whose HELP line for it is this one
}

func main() {
	var (
		out       = flag.String("o", "exposition.dict", "output file")
		size      = flag.Int("size", 112<<10, "dictionary size in bytes")
		perFamily = flag.Int("series", 1, "series names kept per family")
	)
	flag.Parse()
	files, err := filepath.Glob("corpus/*.txt")
	if err != nil {
		log.Fatal(err)
	}
	sort.Strings(files)
	fams := map[string]*family{}
	for _, f := range files {
		if err := read(f, fams, *perFamily); err != nil {
			log.Fatal(err)
		}
	}
	list := make([]*family, 0, len(fams))
	for _, f := range fams {
		list = append(list, f)
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].files != list[j].files {
			return list[i].files > list[j].files
		}
		return list[i].help < list[j].help
	})
	var blocks []string
	n := 0
	for _, f := range list {
		b := f.help + f.typ
		for _, s := range f.series {
			b += s + "\n"
		}
		if n+len(b) > *size {
			continue
		}
		blocks = append(blocks, b)
		n += len(b)
	}
	var d bytes.Buffer
	for i := len(blocks) - 1; i >= 0; i-- {
		d.WriteString(blocks[i])
	}
	if err := os.WriteFile(*out, d.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %d bytes, %d of %d families, from %d files\n", *out, d.Len(), len(blocks), len(list), len(files))
}

// read adds the families of one exposition file to fams.
func read(name string, fams map[string]*family, perFamily int) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	seen := map[string]bool{}
	var cur *family
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text() + "\n"
		switch {
		case strings.HasPrefix(line, "# HELP "):
			cur = fams[line]
			if cur == nil {
				cur = &family{help: line}
				fams[line] = cur
			}
			if !seen[line] {
				seen[line] = true
				cur.files++
			}
		case cur == nil:
		case strings.HasPrefix(line, "# TYPE "):
			if cur.typ == "" {
				cur.typ = line
			}
		case strings.HasPrefix(line, "#"):
		default:
			i := strings.LastIndexByte(strings.TrimSuffix(line, "\n"), ' ')
			if i <= 0 || len(cur.series) >= perFamily {
				continue
			}
			s := line[:i+1]
			dup := false
			for _, have := range cur.series {
				dup = dup || have == s
			}
			if !dup {
				cur.series = append(cur.series, s)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
