package tests

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
	stan "github.com/nats-io/stan.go"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/fixture"
	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
	"github.com/prometheus-streams/prometheus-streams/wire/exposition"
)

// userSeed makes an NKey user key and writes its seed as `nk -gen user -pubout` would,
// mode 0400. It returns the file, the seed and the public key.
func userSeed(t *testing.T) (path string, seed, pub string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := kp.Seed()
	pub, _ = kp.PublicKey()
	path = filepath.Join(t.TempDir(), "edge.nk")
	if err := os.WriteFile(path, []byte(string(s)+"\n"+pub+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	return path, string(s), pub
}

// rawChannel returns the raw bytes of the first n messages on the prometheus channel
// of n. (No end marker, as readChannel uses: the drain would count it as a reject.)
func rawChannel(t *testing.T, ns natsServer, n int) [][]byte {
	t.Helper()
	sc, err := stan.Connect(ns.cluster, fmt.Sprintf("raw-reader-%d", time.Now().UnixNano()), stan.NatsURL(ns.url))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	msgs := make(chan []byte, n)
	sub, err := sc.Subscribe("prometheus", func(m *stan.Msg) {
		select {
		case msgs <- bytes.Clone(m.Data):
		default:
		}
	}, stan.DeliverAllAvailable())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	got := make([][]byte, 0, n)
	for len(got) < n {
		select {
		case m := <-msgs:
			got = append(got, m)
		case <-time.After(20 * time.Second):
			t.Fatalf("%d of %d messages arrived", len(got), n)
		}
	}
	return got
}

// Wire layout, as wire/envelope/doc.go describes it: an 8-byte header (magic, version,
// length), protobuf-wire fields, a CRC-32C trailer over everything before it.
const (
	wireHeader  = 8
	wireTrailer = 4
	wireBody    = 16 // field number of the body
)

// tamperBody flips one byte in the middle of a message's body and recomputes the CRC,
// as an attacker on the stream could: the CRC then passes, the signature must not.
func tamperBody(t *testing.T, msg []byte) []byte {
	t.Helper()
	b := bytes.Clone(msg)
	f := b[wireHeader : len(b)-wireTrailer]
	off := wireHeader
	for len(f) > 0 {
		num, typ, n := protowire.ConsumeTag(f)
		if n < 0 {
			t.Fatal(protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, f[n:])
		if m < 0 {
			t.Fatal(protowire.ParseError(m))
		}
		if num == wireBody {
			body, l := protowire.ConsumeBytes(f[n:])
			b[off+n+(l-len(body))+len(body)/2] ^= 0x20
			binary.LittleEndian.PutUint32(b[len(b)-wireTrailer:], crc32.Checksum(b[:len(b)-wireTrailer], crc32.MakeTable(crc32.Castagnoli)))
			return b
		}
		f = f[n+m:]
		off += n + m
	}
	t.Fatal("message has no body")
	return nil
}

// exposed reports whether the expose endpoint serves any series of job/instance.
func exposed(fams map[string]*dto.MetricFamily, job, instance string) bool {
	_, ok := groupValue(fams, exposition.HealthUp, job, instance)
	return ok
}

// TestSignedScrapes: a drain with trust accepts what scrape-once signs with a trusted
// key, and rejects — counted by reason, logged with key and target, never exposed — a
// tampered message, one signed by an unknown key, a genuinely signed scrape of a job or
// instance outside the key's allowance, and an unsigned scrape; good traffic keeps
// flowing throughout.
func TestSignedScrapes(t *testing.T) {
	seedFile, seed, pub := userSeed(t)
	natsAddr, exposeAddr, mon := freeAddr(t), freeAddr(t), freeAddr(t)
	trust := fmt.Sprintf(`trust:
  - public_key: %s
    jobs: [node]
    instances: ['node\d+']
`, pub)
	d := startDrain(t, writeConfig(t, centralConfig(natsAddr, exposeAddr, mon, trust)), mon)
	srv := embeddedServer(natsAddr)
	target := fixture.ServeCapture(t, fixture.NodeExporter)
	url := "http://" + exposeAddr + "/metrics"
	signing := fmt.Sprintf("signing:\n  nkey_seed_file: %s\n", seedFile)
	edgeRun := func(jobs string, signed bool) result {
		t.Helper()
		cfg := edgeConfig(srv.url, srv.cluster, jobs)
		if signed {
			cfg += signing
		}
		r := runBin(t, "scrape-once", "-c", writeConfig(t, cfg))
		if r.code != 0 {
			t.Fatalf("scrape-once: exit %d\n%s", r.code, r.stderr)
		}
		if strings.Contains(r.stdout+r.stderr, seed) {
			t.Fatal("scrape-once printed the seed")
		}
		return r
	}
	rejected := func(reason string) float64 {
		return d.metric("prometheus_streams_drain_messages_rejected_total", "reason", reason)
	}
	waitExposed := func(job, instance string) {
		t.Helper()
		waitFor(t, 20*time.Second, job+"/"+instance+" exposed", func() bool {
			_, b := fetch(t, url, "")
			return exposed(parseBody(t, b), job, instance)
		})
	}
	for _, r := range []string{"bad_signature", "unknown_key", "not_allowed", "unsigned"} {
		if v := rejected(r); v != 0 {
			t.Fatalf("rejected{reason=%q} = %v at start", r, v)
		}
	}

	// A signed scrape by the trusted key.
	edgeRun(fmt.Sprintf("  node:\n    targets: [{name: node1, url: '%s/metrics'}]\n", target.URL), true)
	waitExposed("node", "node1")

	// 1. That very message, its body changed and its CRC recomputed.
	msgs := rawChannel(t, srv, 1)
	codec, err := envelope.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	if e, err := codec.Decode(msgs[0]); err != nil || e.Signer != pub {
		t.Fatalf("scrape-once's message: %v, signer %q, want %s", err, e.Signer, pub)
	}
	publishTo(t, srv, tamperBody(t, msgs[0]))

	// 2. Signed by a key the drain does not trust, for a target the trusted key owns.
	stranger, _ := nkeys.CreateUser()
	strangerPub, _ := stranger.PublicKey()
	sc, err := envelope.NewCodec(envelope.WithSigner(stranger))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	forged, err := sc.Encode(&envelope.Envelope{Publisher: "edge1", Job: "node", Instance: "node1", Start: time.Now(),
		HTTPStatus: 200, ContentType: "text/plain; version=0.0.4", Body: []byte("forged_metric 1\n"), Series: 1})
	if err != nil {
		t.Fatal(err)
	}
	publishTo(t, srv, forged)

	// 3. Genuinely signed by the trusted key, for a job and an instance it does not own,
	// next to a target it does.
	edgeRun(fmt.Sprintf(`  node:
    targets:
      - {name: node2, url: '%s/metrics'}
      - {name: rogue, url: '%s/metrics'}
  intruder:
    targets: [{name: node3, url: '%s/metrics'}]
`, target.URL, target.URL, target.URL), true)

	// 4. An edge that does not sign.
	edgeRun(fmt.Sprintf("  node:\n    targets: [{name: node4, url: '%s/metrics'}]\n", target.URL), false)

	// Legitimate traffic keeps flowing after all that.
	edgeRun(fmt.Sprintf("  node:\n    targets: [{name: node5, url: '%s/metrics'}]\n", target.URL), true)
	waitExposed("node", "node5")
	waitFor(t, 10*time.Second, "every rejection counted", func() bool {
		return rejected("bad_signature") == 1 && rejected("unknown_key") == 1 &&
			rejected("not_allowed") == 2 && rejected("unsigned") == 1
	})

	_, b := fetch(t, url, "")
	fams := parseBody(t, b)
	for _, want := range []string{"node1", "node2", "node5"} {
		if !exposed(fams, "node", want) {
			t.Errorf("node/%s not exposed", want)
		}
	}
	for _, bad := range [][2]string{{"node", "rogue"}, {"intruder", "node3"}, {"node", "node4"}} {
		if exposed(fams, bad[0], bad[1]) {
			t.Errorf("%s/%s was exposed", bad[0], bad[1])
		}
	}
	if _, ok := fams["forged_metric"]; ok {
		t.Error("the forged message was exposed")
	}
	// node1's data is the capture's, untouched by the tampered copy.
	if v, _ := groupValue(fams, "node_load1", "node", "node1"); v != valueOf(parseCapture(t, fixture.NodeExporter), "node_load1") {
		t.Errorf("node_load1 = %v", v)
	}
	if v := d.metric("prometheus_streams_drain_messages_rejected_total", "reason", "corrupt"); v != 0 {
		t.Errorf("%v messages rejected as corrupt: the recomputed CRC should pass", v)
	}

	// One log line per rejection, naming the reason, the key and the target.
	logs := d.logs()
	var lines []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, `msg="message rejected"`) {
			lines = append(lines, l)
		}
	}
	if len(lines) != 5 {
		t.Errorf("%d rejection log lines, want 5:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for _, want := range [][]string{
		{"reason=bad_signature", "key=" + pub, "job=node", "instance=node1"},
		{"reason=unknown_key", "key=" + strangerPub, "job=node", "instance=node1"},
		{"reason=not_allowed", "key=" + pub, "job=node", "instance=rogue"},
		{"reason=not_allowed", "key=" + pub, "job=intruder", "instance=node3"},
		{"reason=unsigned", "job=node", "instance=node4"},
	} {
		found := false
		for _, l := range lines {
			all := true
			for _, w := range want {
				all = all && strings.Contains(l, w)
			}
			found = found || all
		}
		if !found {
			t.Errorf("no rejection line with %v:\n%s", want, strings.Join(lines, "\n"))
		}
	}
	if strings.Contains(logs, seed) {
		t.Error("the drain logged the seed")
	}
}

// TestSignedWithoutTrust: a drain without trust takes signed and unsigned scrapes
// alike, but still rejects a signature that does not verify.
func TestSignedWithoutTrust(t *testing.T) {
	seedFile, _, _ := userSeed(t)
	natsAddr, exposeAddr, mon := freeAddr(t), freeAddr(t), freeAddr(t)
	d := startDrain(t, writeConfig(t, centralConfig(natsAddr, exposeAddr, mon, "")), mon)
	srv := embeddedServer(natsAddr)
	target := fixture.ServeCapture(t, fixture.NodeExporter)
	cfg := edgeConfig(srv.url, srv.cluster, fmt.Sprintf("  node:\n    targets: [{name: signed, url: '%s/metrics'}]\n", target.URL)) +
		fmt.Sprintf("signing:\n  nkey_seed_file: %s\n", seedFile)
	if r := runBin(t, "scrape-once", "-c", writeConfig(t, cfg)); r.code != 0 {
		t.Fatalf("scrape-once: exit %d\n%s", r.code, r.stderr)
	}
	msgs := rawChannel(t, srv, 1)
	publishTo(t, srv, tamperBody(t, msgs[0]), encode(t, "node", "unsigned", time.Now(), "m 1\n"))
	url := "http://" + exposeAddr + "/metrics"
	waitFor(t, 20*time.Second, "both scrapes exposed", func() bool {
		_, b := fetch(t, url, "")
		fams := parseBody(t, b)
		return exposed(fams, "node", "signed") && exposed(fams, "node", "unsigned")
	})
	waitFor(t, 10*time.Second, "the tampered message rejected", func() bool {
		return d.metric("prometheus_streams_drain_messages_rejected_total", "reason", "bad_signature") == 1
	})
}

// TestSigningConfigErrors: a seed file scrape-once cannot use is a config error (78)
// that names the file and never shows its content; --check-config loads the seed too,
// and shows the file's path only.
func TestSigningConfigErrors(t *testing.T) {
	seedFile, seed, pub := userSeed(t)
	jobs := "  j:\n    targets: [{url: 'http://127.0.0.1:1/'}]\n"
	withSeed := func(path string) string {
		return writeConfig(t, edgeConfig("nats://127.0.0.1:4222", "c", jobs)+"signing:\n  nkey_seed_file: "+path+"\n")
	}

	r := runBin(t, "scrape-once", "-c", withSeed(seedFile), "--check-config")
	if r.code != 0 {
		t.Fatalf("--check-config: exit %d\n%s", r.code, r.stderr)
	}
	mustContain(t, "check-config", r.stdout, seedFile, "valid for scrape-once")
	if strings.Contains(r.stdout+r.stderr, seed) || strings.Contains(r.stdout+r.stderr, pub) {
		t.Errorf("--check-config shows the key:\n%s%s", r.stdout, r.stderr)
	}

	dir := t.TempDir()
	broken := []byte(seed)
	broken[20] ^= 0x01
	account, _ := nkeys.CreateAccount()
	accountSeed, _ := account.Seed()
	for name, content := range map[string]string{
		"public key only": pub + "\n",
		"account seed":    string(accountSeed) + "\n",
		"corrupt seed":    string(broken) + "\n",
		"empty":           "",
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(path, []byte(content), 0o400); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{}, {"--check-config"}} {
			r := runBin(t, "scrape-once", append([]string{"-c", withSeed(path)}, args...)...)
			if r.code != 78 {
				t.Errorf("%s %v: exit %d, want 78\n%s", name, args, r.code, r.stderr)
			}
			mustContain(t, name+" stderr", r.stderr, "signing.nkey_seed_file", path)
			for _, secret := range []string{seed, string(broken), string(accountSeed), string(broken[2:30])} {
				if strings.Contains(r.stdout+r.stderr, secret) {
					t.Errorf("%s: the output shows the seed file's content:\n%s", name, r.stderr)
				}
			}
		}
	}

	// A loose mode works but is warned about.
	loose := filepath.Join(dir, "loose.nk")
	if err := os.WriteFile(loose, []byte(seed+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = runBin(t, "scrape-once", "-c", withSeed(loose), "--check-config")
	if r.code != 0 {
		t.Fatalf("loose mode: exit %d\n%s", r.code, r.stderr)
	}
	mustContain(t, "loose mode warning", r.stderr, "readable by group or others", "0400")
}
