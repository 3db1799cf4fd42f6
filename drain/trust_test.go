package drain

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/logtest"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

func userKey(t *testing.T, n byte) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, bytes.Repeat([]byte{n}, 32))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return kp, pub
}

// signed encodes a scrape of job/instance at offset, signed by kp (unsigned if nil).
func (h *harness) signed(kp nkeys.KeyPair, job, instance string, offset time.Duration) []byte {
	h.t.Helper()
	var opts []envelope.Option
	if kp != nil {
		opts = append(opts, envelope.WithSigner(kp))
	}
	c, err := envelope.NewCodec(opts...)
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close()
	b, err := c.Encode(&envelope.Envelope{Publisher: "edge1", Job: job, Instance: instance, Start: h.base.Add(offset),
		ContentType: "text/plain; version=0.0.4", Body: []byte("m 1\n"), Series: 1})
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

func (h *harness) handle(b []byte) uint64 {
	h.seq++
	h.d.Handle(b, h.seq, h.acks.fn(h.seq))
	return h.seq
}

func (h *harness) rejected(reason string) float64 {
	return testutil.ToFloat64(h.d.metrics.rejected.WithLabelValues(reason))
}

// forge replaces old with new (of the same length) in a message and recomputes its
// CRC, as an attacker on the stream could.
func forge(t *testing.T, msg []byte, old, new string) []byte {
	t.Helper()
	if !bytes.Contains(msg, []byte(old)) {
		t.Fatalf("%q not in the message", old)
	}
	b := bytes.Replace(msg, []byte(old), []byte(new), 1)
	binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

func TestTrust(t *testing.T) {
	a, aPub := userKey(t, 1)
	b, bPub := userKey(t, 2)
	stranger, strangerPub := userKey(t, 3)
	trust, err := NewTrust([]*TrustedKey{
		{PublicKey: aPub, Jobs: []string{"node"}, Instances: []string{`web-\d+`, "db"}},
		{PublicKey: bPub, Jobs: []string{"node", "app"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if trust.Keys() != 2 {
		t.Errorf("Keys() = %d", trust.Keys())
	}
	logs := &logtest.Buffer{}
	rec := &recorder{}
	h := newHarnessWith(t, rec, 2, trust, slog.New(slog.NewTextHandler(logs, nil)))

	good := []uint64{
		h.handle(h.signed(a, "node", "web-1", time.Second)),
		h.handle(h.signed(a, "node", "db", time.Second)),
		h.handle(h.signed(b, "app", "anything:1", time.Second)),
	}
	tests := []struct {
		reason, key, job, instance string
		msg                        []byte
	}{
		{reasonUnsigned, "", "node", "web-2", h.signed(nil, "node", "web-2", time.Second)},
		{reasonUnknownKey, strangerPub, "node", "web-3", h.signed(stranger, "node", "web-3", time.Second)},
		{reasonBadSignature, aPub, "node", "web-5", forge(t, h.signed(a, "node", "web-4", time.Second), "web-4", "web-5")},
		{reasonNotAllowed, aPub, "app", "web-6", h.signed(a, "app", "web-6", time.Second)},     // b's job, not a's
		{reasonNotAllowed, aPub, "node", "web-7x", h.signed(a, "node", "web-7x", time.Second)}, // anchored
		{reasonNotAllowed, aPub, "node", "xdb", h.signed(a, "node", "xdb", time.Second)},
	}
	var bad []uint64
	for _, tt := range tests {
		bad = append(bad, h.handle(tt.msg))
	}
	// Legitimate traffic keeps flowing after the rejections.
	good = append(good, h.handle(h.signed(b, "node", "web-8", time.Second)))
	h.waitAcked(append(good, bad...)...)

	want := []string{"app/anything:1@1s", "node/db@1s", "node/web-1@1s", "node/web-8@1s"}
	waitDelivered(t, rec, len(want))
	got := rec.delivered()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	for reason, n := range map[string]float64{reasonUnsigned: 1, reasonUnknownKey: 1, reasonBadSignature: 1, reasonNotAllowed: 3} {
		if v := h.rejected(reason); v != n {
			t.Errorf("rejected{reason=%q} = %v, want %v", reason, v, n)
		}
	}
	// One line per rejected message, naming the key and the target.
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	var rejected []string
	for _, l := range lines {
		if strings.Contains(l, `msg="message rejected"`) {
			rejected = append(rejected, l)
		}
	}
	if len(rejected) != len(tests) {
		t.Fatalf("%d rejection log lines, want %d:\n%s", len(rejected), len(tests), logs)
	}
	for _, tt := range tests {
		found := false
		for _, l := range rejected {
			if strings.Contains(l, "reason="+tt.reason) && strings.Contains(l, "instance="+tt.instance) &&
				strings.Contains(l, "job="+tt.job) && (tt.key == "" || strings.Contains(l, "key="+tt.key)) {
				found = true
			}
		}
		if !found {
			t.Errorf("no log line for %s %s/%s by %q:\n%s", tt.reason, tt.job, tt.instance, tt.key, strings.Join(rejected, "\n"))
		}
	}
	// Rejected messages touch no per-publisher state: an untrusted message must not
	// create series or targets.
	if n := testutil.ToFloat64(h.d.metrics.targets); n != 4 {
		t.Errorf("targets = %v, want the 4 delivered", n)
	}
}

// TestNoTrust: without a trust list, signed and unsigned messages are delivered alike,
// whatever the key, but a signature that does not verify is still rejected.
func TestNoTrust(t *testing.T) {
	a, _ := userKey(t, 1)
	rec := &recorder{}
	h := newHarness(t, rec, 1)
	ok := []uint64{
		h.handle(h.signed(nil, "j", "unsigned", time.Second)),
		h.handle(h.signed(a, "j", "signed", time.Second)),
	}
	bad := h.handle(forge(t, h.signed(a, "j", "forged", time.Second), "forged", "f0rged"))
	h.waitAcked(append(ok, bad)...)
	waitDelivered(t, rec, 2)
	if got := rec.delivered(); len(got) != 2 {
		t.Errorf("delivered %v", got)
	}
	if v := h.rejected(reasonBadSignature); v != 1 {
		t.Errorf("bad_signature = %v", v)
	}
	for _, r := range []string{reasonUnsigned, reasonUnknownKey, reasonNotAllowed} {
		if v := h.rejected(r); v != 0 {
			t.Errorf("%s = %v without trust", r, v)
		}
	}
}

// TestRejectReasonsPreregistered: every reason is a series from the start, so rate()
// and increase() see the first rejection.
func TestRejectReasonsPreregistered(t *testing.T) {
	h := newHarness(t, &recorder{}, 1)
	fams, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, f := range fams {
		if f.GetName() != "prometheus_streams_drain_messages_rejected_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				reasons = append(reasons, l.GetValue())
			}
		}
	}
	for _, r := range []string{reasonUnsigned, reasonUnknownKey, reasonBadSignature, reasonNotAllowed, "corrupt"} {
		if !slices.Contains(reasons, r) {
			t.Errorf("reason %q not registered at start: %v", r, reasons)
		}
	}
}

func TestNewTrust(t *testing.T) {
	_, pub := userKey(t, 1)
	account, _ := nkeys.CreateAccount()
	accountPub, _ := account.PublicKey()
	if tr, err := NewTrust(nil); tr != nil || err != nil {
		t.Errorf("no publishers: %v, %v; want nil, nil", tr, err)
	}
	if tr, err := NewTrust([]*TrustedKey{}); tr != nil || err != nil {
		t.Errorf("empty list: %v, %v; want nil, nil", tr, err)
	}
	var nilTrust *Trust
	if r, _ := nilTrust.Check(&envelope.Envelope{}); r != "" || nilTrust.Keys() != 0 {
		t.Errorf("a nil Trust rejects: %q", r)
	}
	for name, tps := range map[string][]*TrustedKey{
		"nil entry":   {nil},
		"account key": {{PublicKey: accountPub, Jobs: []string{"j"}}},
		"not a key":   {{PublicKey: "hello", Jobs: []string{"j"}}},
		"no jobs":     {{PublicKey: pub}},
		"twice":       {{PublicKey: pub, Jobs: []string{"j"}}, {PublicKey: pub, Jobs: []string{"k"}}},
		"bad regexp":  {{PublicKey: pub, Jobs: []string{"j"}, Instances: []string{"("}}},
	} {
		if _, err := NewTrust(tps); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// An alternation is anchored as a whole.
	tr, err := NewTrust([]*TrustedKey{{PublicKey: pub, Jobs: []string{"j"}, Instances: []string{"a|b"}}})
	if err != nil {
		t.Fatal(err)
	}
	for inst, want := range map[string]string{"a": "", "b": "", "ab": reasonNotAllowed, "xa": reasonNotAllowed, "bx": reasonNotAllowed} {
		if r, _ := tr.Check(&envelope.Envelope{Signer: pub, Job: "j", Instance: inst}); r != want {
			t.Errorf("instance %q: %q, want %q", inst, r, want)
		}
	}
}

func waitDelivered(t *testing.T, rec *recorder, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.delivered()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("delivered %v, want %d", rec.delivered(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWrongSubject: on JetStream each target has a subject of its own; a message whose
// envelope names another target than its subject is rejected, not delivered.
func TestWrongSubject(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, rec, 1)
	want := func(job, instance string) string { return "prometheus." + job + "." + instance }
	for _, tc := range []struct {
		subject string
		ok      bool
	}{{"prometheus.j.b", false}, {"prometheus.j.a", true}} {
		h.seq++
		b, err := h.codec.Encode(&envelope.Envelope{Job: "j", Instance: "a", Start: h.base.Add(time.Duration(h.seq) * time.Second),
			ContentType: "text/plain; version=0.0.4", Body: []byte("m 1\n"), Series: 1})
		if err != nil {
			t.Fatal(err)
		}
		h.d.HandleMessage(Message{Data: b, Subject: tc.subject, Want: want, Handle: Handle{Seq: h.seq, Ack: h.acks.fn(h.seq)}})
		h.waitAcked(h.seq)
	}
	if v := h.rejected(reasonWrongSubject); v != 1 {
		t.Errorf("rejected{wrong_subject} = %v", v)
	}
	if got := rec.delivered(); len(got) != 1 {
		t.Errorf("delivered %v, want only the message on its own subject", got)
	}
}

// TestTrustBindsIdentity: a key bound to a publisher, a site and static labels cannot
// speak as another site's publisher, nor with another site or static labels: a stolen
// key publishes only as the host it was made for.
func TestTrustBindsIdentity(t *testing.T) {
	a, aPub := userKey(t, 1)
	trust, err := NewTrust([]*TrustedKey{{PublicKey: aPub, Jobs: []string{"node"},
		Publishers: []string{"edge1"}, Sites: []string{"ams1"}, Labels: map[string]string{"dc": "ams1"}}})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	h := newHarnessWith(t, rec, 1, trust, slog.New(slog.DiscardHandler))
	sign := func(publisher, site string, labels []envelope.Label, instance string) uint64 {
		c, err := envelope.NewCodec(envelope.WithSigner(a))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b, err := c.Encode(&envelope.Envelope{Publisher: publisher, Site: site, Labels: labels, Job: "node", Instance: instance,
			Start: h.base.Add(time.Second), ContentType: "text/plain; version=0.0.4", Body: []byte("m 1\n"), Series: 1})
		if err != nil {
			t.Fatal(err)
		}
		return h.handle(b)
	}
	ams := []envelope.Label{{Name: "dc", Value: "ams1"}}
	good := sign("edge1", "ams1", ams, "ok")
	bad := []uint64{
		sign("edge-fra", "ams1", ams, "other-publisher"),
		sign("edge1", "fra1", ams, "other-site"),
		sign("edge1", "ams1", []envelope.Label{{Name: "dc", Value: "fra1"}}, "other-label"),
		sign("edge1", "ams1", nil, "no-label"),
	}
	h.waitAcked(append(bad, good)...)
	waitDelivered(t, rec, 1)
	if got := rec.delivered(); !slices.Equal(got, []string{"node/ok@1s"}) {
		t.Errorf("delivered %v", got)
	}
	if v := h.rejected(reasonNotAllowed); v != 4 {
		t.Errorf("rejected{not_allowed} = %v, want 4", v)
	}
}
