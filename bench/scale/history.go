package main

import (
	"fmt"
	"slices"
	"time"
)

// healthSamples is how many streams_scrape_* samples the drain adds to every scrape.
const healthSamples = 4

// arrivals is what a history receiver took of each target, in the order it arrived:
// every scrape (the timestamp its samples carry) and how many samples of it. A history
// sink must give it every scrape of a target once, whole, oldest first; check says
// where it did not. Not safe for concurrent use: the receiver guards it.
type arrivals struct {
	perScrape int // samples of a whole scrape
	targets   map[string]*targetArrivals
}

// targetArrivals is one target's scrapes as they arrived.
type targetArrivals struct {
	scrapes []arrived // distinct scrapes in the order their first sample arrived
	newest  int64     // the newest timestamp seen, in milliseconds
	whole   int64     // the newest timestamp of a whole scrape; 0 before one
	// again are samples of a scrape already seen that arrived after a newer scrape's:
	// a receiver that keeps order per series (Prometheus) refuses them.
	again int
}

// arrived is one scrape of a target at the receiver.
type arrived struct {
	ts      int64 // milliseconds
	samples int
	late    bool // its first sample arrived after a newer scrape's
}

func newArrivals(perScrape int) *arrivals {
	return &arrivals{perScrape: perScrape, targets: map[string]*targetArrivals{}}
}

// observe records n samples of instance at ts (milliseconds). A target's samples
// arrive scrape after scrape: its requests are sent one after the other.
func (a *arrivals) observe(instance string, ts int64, n int) {
	t := a.targets[instance]
	if t == nil {
		t = &targetArrivals{}
		a.targets[instance] = t
	}
	last := len(t.scrapes) - 1
	var s *arrived
	switch {
	case last >= 0 && t.scrapes[last].ts == ts:
		s = &t.scrapes[last]
	case ts > t.newest:
		t.scrapes = append(t.scrapes, arrived{ts: ts})
		s = &t.scrapes[last+1]
		t.newest = ts
	default: // older than the newest: a scrape out of order, or one again
		i := slices.IndexFunc(t.scrapes, func(s arrived) bool { return s.ts == ts })
		if i < 0 {
			t.scrapes = append(t.scrapes, arrived{ts: ts, late: true})
			i = last + 1
		} else {
			t.again += n
		}
		s = &t.scrapes[i]
	}
	s.samples += n
	if s.samples >= a.perScrape && ts > t.whole {
		t.whole = ts
	}
}

// wholeBy is the timestamp of instance's newest whole scrape, 0 if none.
func (a *arrivals) wholeBy(instance string) int64 {
	if t := a.targets[instance]; t != nil {
		return t.whole
	}
	return 0
}

// sentScrape is one scrape the publisher published: its target, the time its samples carry
// (milliseconds) and when it went to the stream.
type sentScrape struct {
	instance string
	ts       int64
	at       time.Time
}

// historyCheck is how what a receiver took compares with what was published.
type historyCheck struct {
	Targets   int // targets published
	Published int // scrapes published
	Whole     int // published scrapes received whole
	Missing   int // published, not a sample received
	Partial   int // some samples received, not all
	Reordered int // first arrived after a newer scrape of their target
	Repeated  int // samples received beyond a whole scrape's
	Again     int // samples of a scrape already seen that came after a newer scrape's: out of order
	Unknown   int // scrapes received that were never published
	Examples  []string
}

// ok: every scrape arrived whole, once, in order.
func (c historyCheck) ok() bool {
	return c.Published > 0 && c.Whole == c.Published && c.Missing+c.Partial+c.Reordered+c.Repeated+c.Again+c.Unknown == 0
}

const maxExamples = 5

// check compares the arrivals with every scrape published.
func (a *arrivals) check(published []sentScrape) historyCheck {
	var c historyCheck
	example := func(format string, args ...any) {
		if len(c.Examples) < maxExamples {
			c.Examples = append(c.Examples, fmt.Sprintf(format, args...))
		}
	}
	want := map[string][]int64{}
	for _, s := range published {
		want[s.instance] = append(want[s.instance], s.ts)
	}
	c.Targets, c.Published = len(want), len(published)
	for inst, tss := range want {
		slices.Sort(tss)
		got := map[int64]arrived{}
		if t := a.targets[inst]; t != nil {
			for _, s := range t.scrapes {
				got[s.ts] = s
			}
		}
		for _, ts := range tss {
			s, ok := got[ts]
			switch {
			case !ok:
				c.Missing++
				example("%s: scrape at %s never arrived", inst, stamp(ts))
			case s.samples < a.perScrape:
				c.Partial++
				example("%s: scrape at %s: %d of %d samples", inst, stamp(ts), s.samples, a.perScrape)
			default:
				c.Whole++
				if s.samples > a.perScrape {
					c.Repeated += s.samples - a.perScrape
					example("%s: scrape at %s: %d samples, %d more than a scrape has", inst, stamp(ts), s.samples, s.samples-a.perScrape)
				}
			}
			if ok && s.late {
				c.Reordered++
				example("%s: scrape at %s arrived after a newer one", inst, stamp(ts))
			}
		}
	}
	for inst, t := range a.targets {
		if t.again > 0 {
			c.Again += t.again
			example("%s: %d samples of a scrape arrived again after a newer scrape", inst, t.again)
		}
		tss := want[inst]
		for _, s := range t.scrapes {
			if _, found := slices.BinarySearch(tss, s.ts); !found {
				c.Unknown++
				example("%s: a scrape at %s that was never published", inst, stamp(s.ts))
			}
		}
	}
	slices.Sort(c.Examples)
	return c
}

// stamp shows a sample timestamp as a time of day.
func stamp(ms int64) string { return time.UnixMilli(ms).Format("15:04:05.000") }

// behind counts the scrapes published by t (published is in sending order) that have
// not arrived whole: those newer than their target's newest whole scrape. Only an
// order check (check) tells whether an older one is missing.
func behind(a *arrivals, published []sentScrape, t time.Time) int {
	n := 0
	for _, s := range published {
		if s.at.After(t) {
			break
		}
		if a.wholeBy(s.instance) < s.ts {
			n++
		}
	}
	return n
}
