package stream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/certtest"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/logtest"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
)

// writeFile writes content to a new file in a temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// secureDial dials srv with sec; a connection made is closed when the test ends.
func secureDial(t *testing.T, srv *stantest.Server, sec Security) (*STAN, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := DialSTAN(ctx, STANOptions{
		URLs:           []string{srv.URL()},
		ClusterID:      srv.ClusterID(),
		ClientID:       ClientID("sec", ""),
		ConnectTimeout: 5 * time.Second,
		Security:       sec,
		Logger:         newTestLog(t).logger(),
	})
	if err == nil {
		t.Cleanup(func() { _ = s.Close() })
	}
	return s, err
}

// mustPublish checks that s works: one message published and acked.
func mustPublish(t *testing.T, s *STAN) {
	t.Helper()
	r := newResult()
	if err := s.PublishAsync("secure", []byte("hello"), r.done); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if err := r.wait(t); err != nil {
		t.Fatalf("ack: %v", err)
	}
}

// checkRefused checks err is a refusal: ErrAuth and ErrUnreachable, naming the server,
// with a reason, containing each of want, and none of secrets.
func checkRefused(t *testing.T, srv *stantest.Server, err error, want []string, secrets ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("connected; want a refusal")
	}
	t.Logf("refused: %v", err)
	if !errors.Is(err, ErrAuth) || !errors.Is(err, ErrUnreachable) {
		t.Errorf("err = %v, want ErrAuth and ErrUnreachable", err)
	}
	if AuthReason(err) == "" {
		t.Errorf("no AuthReason for %v", err)
	}
	for _, w := range append(want, srv.URL()) {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %q: %v", w, err)
		}
	}
	checkNoSecret(t, err.Error(), secrets...)
}

func checkNoSecret(t *testing.T, s string, secrets ...string) {
	t.Helper()
	for _, secret := range secrets {
		if secret != "" && strings.Contains(s, secret) {
			t.Errorf("a secret (%.3s...) appears in %q", secret, s)
		}
	}
}

// TLS with a private CA and required client certificates: the right material gets in;
// any wrong piece is refused at connect, saying which.
func TestDialTLS(t *testing.T) {
	ca := certtest.NewCA(t, "nats-ca")
	other := certtest.NewCA(t, "other-ca")
	srv := stantest.Start(t, stantest.WithTLS(ca, true))
	client := ca.Client("edge")
	good := Security{CAFile: ca.CertFile, CertFile: client.CertFile, KeyFile: client.KeyFile}

	for name, edit := range map[string]func(*Security){
		"right material":          func(*Security) {},
		"server name override":    func(s *Security) { s.ServerName = "localhost" },
		"skip verify, unknown CA": func(s *Security) { s.CAFile, s.InsecureSkipVerify = other.CertFile, true },
	} {
		t.Run(name, func(t *testing.T) {
			sec := good
			edit(&sec)
			s, err := secureDial(t, srv, sec)
			if err != nil {
				t.Fatal(err)
			}
			mustPublish(t, s)
		})
	}

	otherClient := other.Client("edge")
	expired := ca.ExpiredClient("edge-expired")
	for _, tc := range []struct {
		name string
		edit func(*Security)
		want []string // in the error
	}{
		{"server cert of an unknown CA", func(s *Security) { s.CAFile = other.CertFile }, []string{"not signed by a trusted CA", "x509: certificate signed by unknown authority"}},
		{"system roots", func(s *Security) { s.CAFile = "" }, []string{"not signed by a trusted CA", "unknown authority"}},
		{"wrong server name", func(s *Security) { s.ServerName = "nats.example.org" }, []string{"not valid for the name", "nats.example.org"}},
		{"client cert of another CA", func(s *Security) { s.CertFile, s.KeyFile = otherClient.CertFile, otherClient.KeyFile }, []string{"the server refused the client certificate"}},
		{"expired client cert", func(s *Security) { s.CertFile, s.KeyFile = expired.CertFile, expired.KeyFile }, []string{"the server refused the client certificate"}},
		{"no client cert", func(s *Security) { s.CertFile, s.KeyFile = "", "" }, []string{"the server requires a client certificate and none is configured"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sec := good
			tc.edit(&sec)
			_, err := secureDial(t, srv, sec)
			checkRefused(t, srv, err, tc.want)
		})
	}
}

// TLS wanted by one side only.
func TestDialTLSMismatch(t *testing.T) {
	ca := certtest.NewCA(t, "nats-ca")
	plain := stantest.Start(t)
	_, err := secureDial(t, plain, Security{CAFile: ca.CertFile})
	checkRefused(t, plain, err, []string{"does not offer", "secure connection not available"})

	tlsOnly := stantest.Start(t, stantest.WithTLS(ca, false))
	_, err = secureDial(t, tlsOnly, Security{}) // nats.go turns TLS on, with the system's roots
	checkRefused(t, tlsOnly, err, []string{"unknown authority"})
	s, err := secureDial(t, tlsOnly, Security{CAFile: ca.CertFile})
	if err != nil {
		t.Fatalf("server not asking for client certificates: %v", err)
	}
	mustPublish(t, s)
}

// TLS files that cannot be used: the error names the file and is no refusal.
func TestDialTLSBadFiles(t *testing.T) {
	ca := certtest.NewCA(t, "nats-ca")
	srv := stantest.Start(t, stantest.WithTLS(ca, true))
	client := ca.Client("edge")
	missing := filepath.Join(t.TempDir(), "missing.pem")
	garbage := writeFile(t, "garbage.pem", "not a certificate\n")
	for name, tc := range map[string]struct {
		sec  Security
		want string
	}{
		"missing CA":   {Security{CAFile: missing, CertFile: client.CertFile, KeyFile: client.KeyFile}, missing},
		"garbage CA":   {Security{CAFile: garbage, CertFile: client.CertFile, KeyFile: client.KeyFile}, garbage},
		"missing cert": {Security{CAFile: ca.CertFile, CertFile: missing, KeyFile: client.KeyFile}, missing},
		"key mismatch": {Security{CAFile: ca.CertFile, CertFile: client.CertFile, KeyFile: ca.Client("x").KeyFile}, client.CertFile},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := secureDial(t, srv, tc.sec)
			if err == nil || errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want an error naming %s (not ErrAuth)", err, tc.want)
			}
			t.Logf("%v", err)
		})
	}
}

func TestDialUserPassword(t *testing.T) {
	const password = "pw-Xq7-correct-horse"
	srv := stantest.Start(t, stantest.WithUser("edge", password))
	s, err := secureDial(t, srv, Security{User: "edge", PasswordFile: writeFile(t, "pw", password+"\n")})
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	mustPublish(t, s)

	const wrong = "pw-wrong-battery-staple"
	_, err = secureDial(t, srv, Security{User: "edge", PasswordFile: writeFile(t, "pw", wrong+"\n")})
	checkRefused(t, srv, err, []string{"authorization violation", "nats: Authorization Violation"}, password, wrong)
	_, err = secureDial(t, srv, Security{User: "nobody", PasswordFile: writeFile(t, "pw", password)})
	checkRefused(t, srv, err, []string{"Authorization Violation"}, password)
	_, err = secureDial(t, srv, Security{})
	checkRefused(t, srv, err, []string{"Authorization Violation"})

	missing := filepath.Join(t.TempDir(), "no-such-password")
	empty := writeFile(t, "empty", "\n")
	for _, f := range []string{missing, empty} {
		_, err = secureDial(t, srv, Security{User: "edge", PasswordFile: f})
		if err == nil || errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), f) {
			t.Errorf("password file %s: err = %v, want an error naming it", f, err)
		}
	}
}

func TestDialToken(t *testing.T) {
	const token = "tok-9f8e7d6c5b4a"
	srv := stantest.Start(t, stantest.WithToken(token))
	s, err := secureDial(t, srv, Security{TokenFile: writeFile(t, "token", token+"\r\n")})
	if err != nil {
		t.Fatalf("right token: %v", err)
	}
	mustPublish(t, s)
	const wrong = "tok-0000wrong0000"
	_, err = secureDial(t, srv, Security{TokenFile: writeFile(t, "token", wrong)})
	checkRefused(t, srv, err, []string{"Authorization Violation"}, token, wrong)
}

func newUserKey(t *testing.T) (seedFile, public string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	public, err = kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "user.nk", string(seed)+"\n"), public
}

func TestDialNKey(t *testing.T) {
	seedFile, public := newUserKey(t)
	srv := stantest.Start(t, stantest.WithNKeyUser(public))
	s, err := secureDial(t, srv, Security{NKeySeedFile: seedFile})
	if err != nil {
		t.Fatalf("right seed: %v", err)
	}
	mustPublish(t, s)

	otherSeed, _ := newUserKey(t)
	_, err = secureDial(t, srv, Security{NKeySeedFile: otherSeed})
	seed, _ := os.ReadFile(otherSeed)
	checkRefused(t, srv, err, []string{"Authorization Violation"}, strings.TrimSpace(string(seed)))

	account, _ := nkeys.CreateAccount()
	accountSeed, _ := account.Seed()
	garbage := "SUnot-really-a-seed"
	for name, content := range map[string]string{"garbage": garbage, "account seed": string(accountSeed)} {
		f := writeFile(t, "bad.nk", content)
		_, err = secureDial(t, srv, Security{NKeySeedFile: f})
		if err == nil || errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), f) {
			t.Errorf("%s: err = %v, want an error naming %s", name, err, f)
			continue
		}
		t.Logf("%s: %v", name, err)
		checkNoSecret(t, err.Error(), content)
	}
}

// seedPattern matches an NKey user seed.
var seedPattern = regexp.MustCompile(`SU[A-Z2-7]{50,}`)

// A .creds file against a server in operator (JWT) mode.
func TestDialCredentials(t *testing.T) {
	srv := stantest.Start(t, stantest.WithOperator())
	s, err := secureDial(t, srv, Security{CredentialsFile: srv.UserCreds(t, "edge")})
	if err != nil {
		t.Fatalf("right creds: %v", err)
	}
	mustPublish(t, s)

	other := stantest.Start(t, stantest.WithOperator())
	foreign := other.UserCreds(t, "edge")
	_, err = secureDial(t, srv, Security{CredentialsFile: foreign})
	checkRefused(t, srv, err, []string{"Authorization Violation"})

	// Malformed files are told apart from a refusal, and never quoted.
	creds, err := os.ReadFile(foreign)
	if err != nil {
		t.Fatal(err)
	}
	jwtOnly, _, _ := strings.Cut(string(creds), "************************* IMPORTANT")
	mine, _ := os.ReadFile(srv.UserCreds(t, "mine"))
	_, mySeed, _ := strings.Cut(string(mine), "************************* IMPORTANT")
	for name, content := range map[string]string{
		"garbage":             "this is not a creds file\n",
		"JWT without seed":    jwtOnly,
		"JWT of another user": jwtOnly + mySeed,
	} {
		f := writeFile(t, "bad.creds", content)
		_, err := secureDial(t, srv, Security{CredentialsFile: f})
		if err == nil || errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), f) {
			t.Errorf("%s: err = %v, want an error naming %s", name, err, f)
			continue
		}
		t.Logf("%s: %v", name, err)
		checkNoSecret(t, err.Error(), append(seedPattern.FindAllString(content, -1), "this is not", "eyJ")...)
	}
}

func TestDialValidatesSecurity(t *testing.T) {
	for name, sec := range map[string]Security{
		"cert without key":      {CertFile: "c.pem"},
		"key without cert":      {KeyFile: "k.pem"},
		"user without file":     {User: "edge"},
		"password without user": {PasswordFile: "pw"},
		"two methods":           {TokenFile: "t", NKeySeedFile: "s"},
		"user and creds":        {User: "edge", PasswordFile: "pw", CredentialsFile: "c"},
	} {
		_, err := DialSTAN(context.Background(), STANOptions{URLs: []string{"nats://127.0.0.1:1"}, ClusterID: "c", ClientID: "id", Security: sec})
		if err == nil || errors.Is(err, ErrUnreachable) {
			t.Errorf("%s: err = %v, want a validation error", name, err)
		}
	}
}

// Consume with TLS and client certificates subscribes and receives.
func TestConsumeTLS(t *testing.T) {
	ca := certtest.NewCA(t, "nats-ca")
	srv := stantest.Start(t, stantest.WithTLS(ca, true))
	client := ca.Client("drain")
	o, log := consumeOptions(t, srv.URL())
	o.Security = Security{CAFile: ca.CertFile, CertFile: client.CertFile, KeyFile: client.KeyFile}
	c := startConsume(t, o, log, func(m *Msg) { _ = m.Ack() })
	waitUntil(t, 10*time.Second, "subscribed", c.connected)
	sc := srv.Connect(t, "publisher")
	if err := sc.Publish(testSubject, []byte("over TLS")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the message", func() bool { return len(c.received()) == 1 })
}

// Consume with a refused password keeps retrying, reporting and logging why; it gets
// in once the password file is right, read again at each attempt.
func TestConsumeRefusedThenFixed(t *testing.T) {
	const password, wrong = "drain-pw-5e6f", "drain-pw-wrong"
	srv := stantest.Start(t, stantest.WithUser("drain", password))
	pwFile := writeFile(t, "pw", wrong+"\n")
	o, log := consumeOptions(t, srv.URL())
	o.Security = Security{User: "drain", PasswordFile: pwFile}
	c := startConsume(t, o, log, nil)
	waitUntil(t, 10*time.Second, "two refusals", func() bool { return len(c.allStates()) >= 2 })
	log.await(t, "NATS authentication or TLS failed; retrying", time.Second)
	for _, s := range c.allStates() {
		if s.Connected || !errors.Is(s.Err, ErrAuth) || !strings.Contains(s.Err.Error(), "Authorization Violation") {
			t.Errorf("state %+v, want a refusal for an authorization violation", s)
		}
		if s.Err != nil {
			checkNoSecret(t, s.Err.Error(), password, wrong)
		}
	}
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "subscribed with the fixed password", c.connected)
}

// The log line of a refusal carries its reason, and no secret.
func TestConsumeRefusalLog(t *testing.T) {
	const token = "tok-consume-1a2b"
	srv := stantest.Start(t, stantest.WithToken(token))
	o, _ := consumeOptions(t, srv.URL())
	rec := &logtest.Buffer{}
	o.Logger = rec.Logger()
	o.Security = Security{TokenFile: writeFile(t, "token", token+"-not")}
	c := startConsume(t, o, nil, nil)
	waitUntil(t, 10*time.Second, "a refusal", func() bool { return len(c.allStates()) >= 1 })
	c.stop()
	out := rec.String()
	for _, want := range []string{"NATS authentication or TLS failed", "reason=\"authorization violation", "nats: Authorization Violation"} {
		if !strings.Contains(out, want) {
			t.Errorf("log does not contain %q:\n%s", want, out)
		}
	}
	checkNoSecret(t, out, token)
}

// securityReason on errors the servers here cannot easily produce, and on errors that
// are no refusal.
func TestSecurityReason(t *testing.T) {
	dropped := &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}
	withCert := &Security{CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem"}
	verifying := &serverInfo{TLSRequired: true, TLSVerify: true}
	for _, tc := range []struct {
		name string
		err  error
		sec  *Security
		info *serverInfo
		want string // "" for no refusal
	}{
		{"expired server certificate", &tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Reason: x509.Expired}}, withCert, nil, "the server's certificate has expired"},
		{"other verification failure", &tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Reason: x509.IncompatibleUsage}}, withCert, nil, "the server's certificate did not verify"},
		{"revoked", nats.ErrAuthRevoked, &Security{}, nil, "authentication revoked"},
		{"expired credentials", nats.ErrAuthExpired, &Security{}, nil, "authentication expired"},
		{"not TLS", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, withCert, nil, "does not speak TLS"},
		{"dropped by a verifying server, with a certificate", dropped, withCert, verifying, "the server refused the client certificate"},
		{"dropped by a verifying server, without one", dropped, &Security{CAFile: "ca.pem"}, verifying, "requires a client certificate and none is configured"},
		{"dropped by a server not verifying", dropped, withCert, &serverInfo{TLSRequired: true}, ""},
		{"dropped before any INFO", dropped, withCert, nil, ""},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, withCert, nil, ""},
		{"timeout", nats.ErrTimeout, withCert, verifying, ""},
	} {
		got := securityReason(tc.err, tc.sec, tc.info)
		if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("%s: reason %q, want %q", tc.name, got, tc.want)
		}
	}
}

// infoDialer keeps the INFO line whatever the reads' sizes, and passes all bytes on.
func TestInfoConn(t *testing.T) {
	const stream = "INFO {\"server_id\":\"x\",\"tls_required\":true,\"tls_verify\":true}\r\nPONG\r\nmore"
	for _, chunk := range []int{1, 7, len(stream)} {
		server, client := net.Pipe()
		go func() {
			defer server.Close()
			for i := 0; i < len(stream); i += chunk {
				_, _ = server.Write([]byte(stream[i:min(i+chunk, len(stream))]))
			}
		}()
		d := &infoDialer{}
		c := &infoConn{Conn: client, d: d}
		b, err := io.ReadAll(c)
		if err != nil || string(b) != stream {
			t.Fatalf("chunk %d: read %q, %v", chunk, b, err)
		}
		if info := d.lastInfo(); info == nil || !info.TLSRequired || !info.TLSVerify || info.AuthRequired {
			t.Errorf("chunk %d: info %+v", chunk, info)
		}
	}
}
