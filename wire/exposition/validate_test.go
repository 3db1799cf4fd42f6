package exposition

import (
	"errors"
	"strings"
	"testing"
)

// TestValid: a body whose names, help or label values hold bytes that are not UTF-8 is
// refused, naming what is wrong; a clean one (UTF-8 beyond ASCII included) passes.
func TestValid(t *testing.T) {
	for name, tc := range map[string]struct {
		body, want string
	}{
		"clean":       {"# HELP m héllo ✓\n# TYPE m gauge\nm{l=\"日本\"} 1\n", ""},
		"help":        {"# HELP m bad \xff byte\n# TYPE m gauge\nm 1\n", "help of m"},
		"label value": {"# TYPE m gauge\nm{l=\"a\xffb\"} 1\n", "value of label l"},
	} {
		t.Run(name, func(t *testing.T) {
			fams, err := Parse([]byte(tc.body), "text/plain; version=0.0.4")
			if err != nil {
				if tc.want != "" && errors.Is(err, ErrInvalid) {
					return // refused by the parser already: as good
				}
				t.Fatal(err)
			}
			err = Valid(fams)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Valid = %v", err)
			case tc.want != "" && (err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Valid = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}
