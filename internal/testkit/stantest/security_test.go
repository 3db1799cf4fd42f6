package stantest_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/prometheus-streams/prometheus-streams/internal/testkit/certtest"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/stantest"
)

// Each secured server starts (its streaming part got into its NATS), lets a client with
// NATSOptions publish and read back, and refuses a client without them.
func TestSecuredServers(t *testing.T) {
	ca := certtest.NewCA(t, "stantest")
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	upub, _ := user.PublicKey()
	for name, opts := range map[string][]stantest.Option{
		"tls":                 {stantest.WithTLS(ca, false)},
		"tls verify":          {stantest.WithTLS(ca, true)},
		"tls verify separate": {stantest.WithTLS(ca, true), stantest.WithSeparateNATS()},
		"users":               {stantest.WithUser("edge", "pw1"), stantest.WithUser("drain", "pw2")},
		"users separate":      {stantest.WithUser("edge", "pw1"), stantest.WithSeparateNATS()},
		"token":               {stantest.WithToken("t0ken")},
		"token separate":      {stantest.WithToken("t0ken"), stantest.WithSeparateNATS()},
		"nkeys":               {stantest.WithNKeyUser(upub)},
		"operator":            {stantest.WithOperator()},
		"tls and users":       {stantest.WithTLS(ca, true), stantest.WithUser("edge", "pw1")},
	} {
		t.Run(name, func(t *testing.T) {
			s := stantest.Start(t, opts...)
			sc := s.Connect(t, "client-1")
			publish(t, sc, msgs("m", 3))
			if got := readAll(t, sc, 3); !equal(got, msgs("m", 3)) {
				t.Fatalf("read %q", got)
			}
			nc, err := nats.Connect(s.URL(), nats.Timeout(5*time.Second))
			if err == nil {
				nc.Close()
				t.Fatal("a client without credentials got in")
			}
			t.Logf("without credentials: %v", err)
		})
	}
}

func TestUserCreds(t *testing.T) {
	s := stantest.Start(t, stantest.WithOperator())
	creds := s.UserCreds(t, "edge")
	nc, err := nats.Connect(s.URL(), nats.UserCredentials(creds), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	other := stantest.Start(t, stantest.WithOperator())
	_, err = nats.Connect(s.URL(), nats.UserCredentials(other.UserCreds(t, "edge")), nats.Timeout(5*time.Second))
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("creds of another operator: %v, want %v", err, nats.ErrAuthorization)
	}
	if b, err := os.ReadFile(creds); err != nil || filepath.Ext(creds) != ".creds" || len(b) == 0 {
		t.Fatalf("creds file %s: %v", creds, err)
	}
}
