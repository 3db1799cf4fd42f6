// Command count reads `go test -json` output of the remote-write sender compliance
// suite and prints, per sender, how many cases passed, side by side, then the cases
// each sender failed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
)

type event struct {
	Action string
	Test   string
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: count SENDER... < go-test.json")
		os.Exit(64)
	}
	senders := os.Args[1:]
	pass := map[string][]string{}
	fail := map[string][]string{}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil || (e.Action != "pass" && e.Action != "fail") {
			continue
		}
		i := strings.LastIndexByte(e.Test, '/')
		if i < 0 {
			continue
		}
		name, sender := e.Test[:i], e.Test[i+1:]
		if !slices.Contains(senders, sender) {
			continue
		}
		if e.Action == "pass" {
			pass[sender] = append(pass[sender], name)
		} else {
			fail[sender] = append(fail[sender], name)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "count:", err)
		os.Exit(1)
	}
	w := 0
	for _, s := range senders {
		w = max(w, len(s))
	}
	fmt.Printf("%-*s  %6s  %6s  %6s\n", w, "sender", "passed", "failed", "cases")
	for _, s := range senders {
		p, f := len(pass[s]), len(fail[s])
		fmt.Printf("%-*s  %6d  %6d  %6d\n", w, s, p, f, p+f)
	}
	for _, s := range senders {
		slices.Sort(fail[s])
		for _, name := range fail[s] {
			fmt.Printf("%s failed: %s\n", s, name)
		}
	}
}
