package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEPromises walks the README's numbered promises of the drain and checks that
// every test named as holding one exists in the tree, so the list cannot point at a test
// that was renamed or removed.
func TestREADMEPromises(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const head = "### What the drain promises, and the test that holds each"
	start := strings.Index(string(readme), head)
	if start < 0 {
		t.Fatal("README has no promises section")
	}
	section := string(readme[start+len(head):])
	section = section[:strings.Index(section, "\n### ")]
	promises := regexp.MustCompile(`(?m)^\d+\. \*\*`).FindAllStringIndex(section, -1)
	if len(promises) < 7 {
		t.Fatalf("%d promises in the README, want the 7 (no loss, order, expiry, staleness, restart and reload, security, isolation)", len(promises))
	}
	var src strings.Builder
	err = filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != ".." {
			return filepath.SkipDir
		}
		if strings.HasSuffix(path, "_test.go") {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			src.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	named := regexp.MustCompile("`(Test[A-Za-z0-9_]+)`")
	for i, p := range promises {
		end := len(section)
		if i+1 < len(promises) {
			end = promises[i+1][0]
		}
		tests := named.FindAllStringSubmatch(section[p[0]:end], -1)
		if len(tests) == 0 {
			t.Errorf("promise %d names no test", i+1)
		}
		for _, m := range tests {
			if !strings.Contains(src.String(), "func "+m[1]+"(t *testing.T)") {
				t.Errorf("promise %d names %s, which is no test in the tree", i+1, m[1])
			}
		}
	}
}
