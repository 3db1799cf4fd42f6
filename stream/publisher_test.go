package stream

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestMsgID(t *testing.T) {
	start := time.Date(2025, 1, 2, 3, 4, 5, 678901234, time.UTC)
	id := MsgID("node", "host:9100", start, 0, 1)
	if again := MsgID("node", "host:9100", start.In(time.FixedZone("x", 3600)), 0, 1); again != id {
		t.Errorf("same scrape, another ID: %q, %q", id, again)
	}
	if !regexp.MustCompile(`^[0-9a-f]{24}-1735787045678901234-0-1$`).MatchString(id) {
		t.Errorf("ID %q", id)
	}
	seen := map[string]string{id: "base"}
	for name, other := range map[string]string{
		"job":            MsgID("node2", "host:9100", start, 0, 1),
		"instance":       MsgID("node", "host:9101", start, 0, 1),
		"start":          MsgID("node", "host:9100", start.Add(time.Nanosecond), 0, 1),
		"part":           MsgID("node", "host:9100", start, 1, 2),
		"parts":          MsgID("node", "host:9100", start, 0, 2),
		"shifted split":  MsgID("nodeh", "ost:9100", start, 0, 1),
		"empty job":      MsgID("", "nodehost:9100", start, 0, 1),
		"long and weird": MsgID(strings.Repeat("j.*> \x00é", 100), strings.Repeat("i", 1000), start, 99, 100),
	} {
		if prev, dup := seen[other]; dup {
			t.Errorf("%s: ID %q is also %s's", name, other, prev)
		}
		seen[other] = name
		if len(other) > 64 || strings.ContainsFunc(other, func(r rune) bool { return !strings.ContainsRune("0123456789abcdef-", r) }) {
			t.Errorf("%s: ID %q: want at most 64 bytes of [0-9a-f-]", name, other)
		}
	}
}
