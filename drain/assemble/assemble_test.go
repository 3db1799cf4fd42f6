package assemble

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

var t0 = time.Date(2024, 3, 5, 10, 15, 30, 0, time.UTC)

func newCodec(tb testing.TB, opts ...envelope.Option) *envelope.Codec {
	tb.Helper()
	c, err := envelope.NewCodec(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// clock is a settable clock for Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// scrapeOf is a scrape of the node_exporter capture for job/instance started at start.
func scrapeOf(tb testing.TB, instance string, start time.Time) *envelope.Envelope {
	tb.Helper()
	body := fixture.Read(tb, fixture.NodeExporter)
	return &envelope.Envelope{
		Publisher: "edge-1", Job: "node", Instance: instance, Labels: []envelope.Label{{Name: "dc", Value: "ams1"}},
		Start: start, Duration: time.Second, HTTPStatus: 200, ContentType: fixture.TextContentType,
		Body: body, Series: 507,
	}
}

// split encodes e in parts of at most maxSize bytes and decodes them.
func split(tb testing.TB, c *envelope.Codec, e *envelope.Envelope, maxSize int) ([]*envelope.Envelope, [][]byte) {
	tb.Helper()
	msgs, err := c.EncodeSplit(e, maxSize)
	if err != nil {
		tb.Fatal(err)
	}
	if len(msgs) < 2 {
		tb.Fatalf("%d message, want parts", len(msgs))
	}
	parts := make([]*envelope.Envelope, len(msgs))
	for i, m := range msgs {
		if parts[i], err = c.Decode(m); err != nil {
			tb.Fatalf("Decode part %d: %v", i, err)
		}
	}
	return parts, msgs
}

// handle names a delivery of a part: part index and delivery number.
type handle struct{ part, delivery int }

func addOK(tb testing.TB, r *Reassembler[handle], p *envelope.Envelope, h handle) Outcome[handle] {
	tb.Helper()
	out, err := r.Add(p, h)
	if err != nil {
		tb.Fatalf("Add part %d of %s: %v", p.Part, p.Instance, err)
	}
	return out
}

func wantStats(tb testing.TB, r *Reassembler[handle], want Stats) {
	tb.Helper()
	if got := r.Stats(); got != want {
		tb.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

func chunkBytes(parts ...*envelope.Envelope) int64 {
	n := int64(0)
	for _, p := range parts {
		n += int64(len(p.Chunk))
	}
	return n
}

func TestAddCompletes(t *testing.T) {
	c := newCodec(t)
	e := scrapeOf(t, "a:9100", t0)
	parts, _ := split(t, c, e, 3000)
	k := len(parts)
	r := New[handle](c, Options{})
	order := rand.Perm(k)
	for n, i := range order {
		out := addOK(t, r, parts[i], handle{i, 0})
		if len(out.Dropped) > 0 {
			t.Fatalf("dropped %v", out.Dropped)
		}
		if n < k-1 {
			if out.Whole != nil {
				t.Fatalf("whole after %d of %d parts", n+1, k)
			}
			held := make([]*envelope.Envelope, 0, n+1)
			for _, j := range order[:n+1] {
				held = append(held, parts[j])
			}
			wantStats(t, r, Stats{Scrapes: 1, Parts: n + 1, Bytes: chunkBytes(held...)})
			continue
		}
		if out.Whole == nil {
			t.Fatal("no whole scrape after the last part")
		}
		if !bytes.Equal(out.Whole.Body, e.Body) || out.Whole.Job != e.Job || !out.Whole.Start.Equal(e.Start) || out.Whole.Parts != 1 {
			t.Fatalf("joined scrape differs: %d bytes, %s, %v, parts %d", len(out.Whole.Body), out.Whole.Job, out.Whole.Start, out.Whole.Parts)
		}
		want := make([]handle, k)
		for i := range want {
			want[i] = handle{i, 0}
		}
		if !slices.Equal(out.Handles, want) {
			t.Fatalf("handles %v, want %v", out.Handles, want)
		}
	}
	wantStats(t, r, Stats{})
}

func TestAddRedelivered(t *testing.T) {
	c := newCodec(t)
	parts, _ := split(t, c, scrapeOf(t, "a:9100", t0), 3000)
	r := New[handle](c, Options{})
	addOK(t, r, parts[0], handle{0, 0})
	addOK(t, r, parts[1], handle{1, 0})
	before := r.Stats()
	again, err := c.Decode(mustEncode(t, c, parts, 1))
	if err != nil {
		t.Fatal(err)
	}
	out := addOK(t, r, again, handle{1, 1})
	if out.Whole != nil || len(out.Dropped) > 0 {
		t.Fatalf("a redelivery completed or dropped something: %+v", out)
	}
	wantStats(t, r, before) // not stored twice

	other := *parts[1]
	other.Chunk = slices.Clone(other.Chunk)
	other.Chunk[0] ^= 1
	if _, err := r.Add(&other, handle{1, 2}); !errors.Is(err, ErrMismatch) {
		t.Fatalf("part 1 with another chunk: %v, want ErrMismatch", err)
	}
	for i := 2; i < len(parts); i++ {
		out = addOK(t, r, parts[i], handle{i, 0})
	}
	if out.Whole == nil {
		t.Fatal("not completed")
	}
	if out.Handles[1] != (handle{1, 1}) {
		t.Fatalf("handles %v: the newest delivery of part 1 should win", out.Handles)
	}
}

// mustEncode re-encodes part i of a split: a redelivery is the same bytes.
func mustEncode(tb testing.TB, c *envelope.Codec, parts []*envelope.Envelope, i int) []byte {
	tb.Helper()
	e := *parts[0]
	e.Part, e.Parts, e.Chunk = 0, 0, nil
	e.Body = fixture.Read(tb, fixture.NodeExporter)
	msgs, err := c.EncodeSplit(&e, 3000)
	if err != nil {
		tb.Fatal(err)
	}
	return msgs[i]
}

func TestAddSuperseded(t *testing.T) {
	c := newCodec(t)
	old, _ := split(t, c, scrapeOf(t, "a:9100", t0), 3000)
	newer, _ := split(t, c, scrapeOf(t, "a:9100", t0.Add(time.Minute)), 3000)
	r := New[handle](c, Options{})
	addOK(t, r, old[0], handle{0, 0})
	addOK(t, r, old[2], handle{2, 0})

	out := addOK(t, r, newer[1], handle{1, 10})
	if out.Whole != nil || len(out.Dropped) != 1 {
		t.Fatalf("outcome %+v, want the older scrape dropped", out)
	}
	d := out.Dropped[0]
	if !errors.Is(d.Err, ErrSuperseded) || !d.Start.Equal(t0) || !slices.Equal(d.Handles, []handle{{0, 0}, {2, 0}}) ||
		d.Parts != len(old) || slices.Contains(d.Missing, 0) || !slices.Contains(d.Missing, 1) {
		t.Fatalf("dropped %+v", d)
	}
	t.Log(d.Err)
	wantStats(t, r, Stats{Scrapes: 1, Parts: 1, Bytes: chunkBytes(newer[1])})

	// A late part of the older scrape is dropped on arrival.
	out = addOK(t, r, old[1], handle{1, 0})
	if len(out.Dropped) != 1 || !errors.Is(out.Dropped[0].Err, ErrSuperseded) || !slices.Equal(out.Dropped[0].Handles, []handle{{1, 0}}) {
		t.Fatalf("late part of an older scrape: %+v", out)
	}
	wantStats(t, r, Stats{Scrapes: 1, Parts: 1, Bytes: chunkBytes(newer[1])})

	// Another target is another key.
	other, _ := split(t, c, scrapeOf(t, "b:9100", t0), 3000)
	if out := addOK(t, r, other[0], handle{0, 0}); len(out.Dropped) > 0 {
		t.Fatalf("a part of another target dropped %+v", out.Dropped)
	}
	wantStats(t, r, Stats{Scrapes: 2, Parts: 2, Bytes: chunkBytes(newer[1], other[0])})
}

func TestSupersede(t *testing.T) {
	c := newCodec(t)
	parts, _ := split(t, c, scrapeOf(t, "a:9100", t0), 3000)
	r := New[handle](c, Options{})
	addOK(t, r, parts[0], handle{0, 0})
	if _, ok := r.Supersede("node", "a:9100", t0); ok {
		t.Fatal("a whole scrape of the same start superseded the split one")
	}
	if _, ok := r.Supersede("node", "b:9100", t0.Add(time.Minute)); ok {
		t.Fatal("another target's scrape superseded it")
	}
	d, ok := r.Supersede("node", "a:9100", t0.Add(time.Minute))
	if !ok || !errors.Is(d.Err, ErrSuperseded) || !slices.Equal(d.Handles, []handle{{0, 0}}) {
		t.Fatalf("Supersede = %+v, %t", d, ok)
	}
	wantStats(t, r, Stats{})
}

func TestAddMismatch(t *testing.T) {
	c := newCodec(t)
	e := scrapeOf(t, "a:9100", t0)
	parts, _ := split(t, c, e, 3000)
	other := *e
	other.Publisher = "edge-2"
	theirs, _ := split(t, c, &other, 3000)
	fewer, _ := split(t, c, e, 5000)
	r := New[handle](c, Options{})
	addOK(t, r, parts[0], handle{0, 0})
	before := r.Stats()
	for name, p := range map[string]*envelope.Envelope{"another publisher": theirs[1], "another split": fewer[1]} {
		if _, err := r.Add(p, handle{1, 0}); !errors.Is(err, ErrMismatch) {
			t.Fatalf("%s: %v, want ErrMismatch", name, err)
		} else {
			t.Log(err)
		}
	}
	wantStats(t, r, before)
}

func TestAddNotPart(t *testing.T) {
	c := newCodec(t)
	r := New[handle](c, Options{})
	e := scrapeOf(t, "a:9100", t0)
	msg, err := c.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := c.Decode(msg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*envelope.Envelope{nil, whole, {Part: 0, Parts: 2}, {Part: 2, Parts: 2, Chunk: []byte{1}}} {
		if _, err := r.Add(p, handle{}); !errors.Is(err, ErrNotPart) {
			t.Fatalf("Add(%+v) = %v, want ErrNotPart", p, err)
		}
	}
}

func TestMaxBytes(t *testing.T) {
	c := newCodec(t)
	a, _ := split(t, c, scrapeOf(t, "a:9100", t0), 3000)
	b, _ := split(t, c, scrapeOf(t, "b:9100", t0), 6000) // chunks twice the size of a's
	r := New[handle](c, Options{MaxBytes: chunkBytes(a...)})
	for i := range len(a) - 1 {
		addOK(t, r, a[i], handle{i, 0})
	}
	if _, err := r.Add(b[0], handle{0, 0}); !errors.Is(err, ErrFull) {
		t.Fatalf("over the limit: %v, want ErrFull", err)
	} else {
		t.Log(err)
	}
	held := Stats{Scrapes: 1, Parts: len(a) - 1, Bytes: chunkBytes(a[:len(a)-1]...)}
	wantStats(t, r, held)
	// A newer scrape of a target may take the room its older one frees.
	newer, _ := split(t, c, scrapeOf(t, "a:9100", t0.Add(time.Minute)), 3000)
	out := addOK(t, r, newer[0], handle{0, 1})
	if len(out.Dropped) != 1 || !errors.Is(out.Dropped[0].Err, ErrSuperseded) {
		t.Fatalf("outcome %+v", out)
	}
	for i := 1; i < len(newer)-1; i++ {
		addOK(t, r, newer[i], handle{i, 1})
	}
	// Up to the limit exactly: the last part is taken, the scrape joined and let go.
	if out := addOK(t, r, newer[len(newer)-1], handle{len(newer) - 1, 1}); out.Whole == nil {
		t.Fatal("not completed")
	}
	wantStats(t, r, Stats{})
	addOK(t, r, b[0], handle{0, 0})

	// A scrape that alone needs more than the limit can never complete.
	small := New[handle](c, Options{MaxBytes: chunkBytes(a...) - int64(len(a))})
	if _, err := small.Add(a[0], handle{0, 0}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("scrape over the limit: %v, want ErrTooLarge", err)
	} else {
		t.Log(err)
	}
}

func TestExpire(t *testing.T) {
	c := newCodec(t)
	parts, _ := split(t, c, scrapeOf(t, "a:9100", t0), 2000)
	if len(parts) < 5 {
		t.Fatalf("%d parts, want 5 or more", len(parts))
	}
	clk := &clock{now: t0}
	r := New[handle](c, Options{Timeout: time.Minute, Now: clk.Now})
	addOK(t, r, parts[0], handle{0, 0})
	addOK(t, r, parts[2], handle{2, 0})
	clk.Add(50 * time.Second)
	addOK(t, r, parts[0], handle{0, 1}) // a redelivery does not keep the scrape alive
	other, _ := split(t, c, scrapeOf(t, "b:9100", t0), 2000)
	addOK(t, r, other[0], handle{0, 0})
	if got := r.Expire(t0.Add(time.Minute - 1)); len(got) != 0 {
		t.Fatalf("expired before the timeout: %+v", got)
	}
	got := r.Expire(t0.Add(time.Minute))
	if len(got) != 1 {
		t.Fatalf("expired %d scrapes, want 1", len(got))
	}
	d := got[0]
	var missing []int
	for i := range parts {
		if i != 0 && i != 2 {
			missing = append(missing, i)
		}
	}
	if !errors.Is(d.Err, ErrTimeout) || d.Instance != "a:9100" || !slices.Equal(d.Missing, missing) ||
		!slices.Equal(d.Handles, []handle{{0, 1}, {2, 0}}) || !strings.Contains(d.Err.Error(), "missing 1, 3, 4") {
		t.Fatalf("expired %+v: %v", d, d.Err)
	}
	t.Log(d.Err)
	wantStats(t, r, Stats{Scrapes: 1, Parts: 1, Bytes: chunkBytes(other[0])})
	if got := r.Expire(t0.Add(time.Hour)); len(got) != 1 || got[0].Instance != "b:9100" {
		t.Fatalf("expired %+v", got)
	}
	wantStats(t, r, Stats{})
}

func TestJoinFails(t *testing.T) {
	c := newCodec(t)
	_, msgs := split(t, c, scrapeOf(t, "a:9100", t0), 3000)
	// A byte of a chunk changed and the checksum recomputed: the part decodes (an
	// unsigned message), but the chunks no longer make the scrape the parts name.
	m := slices.Clone(msgs[1])
	m[len(m)/2] ^= 1
	binary.LittleEndian.PutUint32(m[len(m)-4:], crc32.Checksum(m[:len(m)-4], crc32.MakeTable(crc32.Castagnoli)))
	msgs[1] = m
	r := New[handle](c, Options{})
	var out Outcome[handle]
	for i, m := range msgs {
		p, err := c.Decode(m)
		if err != nil {
			t.Fatalf("Decode part %d: %v", i, err)
		}
		out = addOK(t, r, p, handle{i, 0})
	}
	if out.Whole != nil || len(out.Dropped) != 1 || !errors.Is(out.Dropped[0].Err, envelope.ErrCorrupt) ||
		len(out.Dropped[0].Handles) != len(msgs) || len(out.Dropped[0].Missing) != 0 {
		t.Fatalf("outcome %+v", out)
	}
	t.Log(out.Dropped[0].Err)
	wantStats(t, r, Stats{})
}

// TestConcurrent adds the parts of many targets' scrapes, each part delivered twice,
// from several goroutines: every scrape completes exactly once.
func TestConcurrent(t *testing.T) {
	c := newCodec(t)
	const targets = 16
	var all []*envelope.Envelope
	for i := range targets {
		parts, _ := split(t, c, scrapeOf(t, fmt.Sprintf("host%d:9100", i), t0), 4000)
		all = append(all, parts...)
		all = append(all, parts...)
	}
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	r := New[handle](c, Options{})
	var (
		mu    sync.Mutex
		whole = map[string]int{}
		wg    sync.WaitGroup
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(all); i += 4 {
				out, err := r.Add(all[i], handle{all[i].Part, i})
				if err != nil || len(out.Dropped) > 0 {
					t.Errorf("Add: %v, dropped %v", err, out.Dropped)
					return
				}
				if out.Whole != nil {
					mu.Lock()
					whole[out.Whole.Instance]++
					mu.Unlock()
				}
				_ = r.Stats()
			}
		}()
	}
	wg.Wait()
	// A redelivery after its scrape completed starts it again: that is how a scrape
	// whose delivery is retried gets its live handles. So each completes once or twice.
	for i := range targets {
		if n := whole[fmt.Sprintf("host%d:9100", i)]; n < 1 || n > 2 {
			t.Errorf("host%d completed %d times", i, n)
		}
	}
	r.Expire(t0.Add(time.Hour * 1e4))
}

func TestIndexes(t *testing.T) {
	for _, tt := range []struct {
		in   []int
		want string
	}{
		{nil, ""},
		{[]int{3}, "3"},
		{[]int{1, 2}, "1, 2"},
		{[]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, "0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 2 more"},
	} {
		if got := indexes(tt.in); got != tt.want {
			t.Errorf("indexes(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
