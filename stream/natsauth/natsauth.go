// Package natsauth reads and checks the files that secure a NATS connection: password
// and token files, NKey seeds, .creds files and TLS certificates. The transport reads
// them at each dial and the configuration checks them at load, with the same code, so a
// file the dial would refuse is a configuration error, found by --check-config too.
//
// Errors name the file at fault and what is wrong with it, never its content.
package natsauth

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Secret reads a password or token file (what says which, for errors), without its
// trailing newline. An empty one is an error.
func Secret(what, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err) // *PathError: names the file
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s %s is empty", what, path)
	}
	return s, nil
}

// CheckSeed checks that an NKey seed file holds a user seed (SU..., as `nk -gen user`
// writes it), which is what a NATS server takes to authenticate a client.
func CheckSeed(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read NKey seed file: %w", err)
	}
	defer clear(b)
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return fmt.Errorf("NKey seed file %s: no NKey seed in it (%w)", path, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return fmt.Errorf("NKey seed file %s: not an NKey user seed (SU...): generate one with `nk -gen user`", path)
	}
	return nil
}

// CheckCreds checks that a .creds file holds a user JWT and the seed of the same user,
// so that a wrong file is told apart from credentials the server refuses.
func CheckCreds(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read credentials file: %w", err)
	}
	defer clear(b)
	kp, err := nkeys.ParseDecoratedUserNKey(b)
	if err != nil {
		return fmt.Errorf("credentials file %s: no NKey user seed in it (%w)", path, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return fmt.Errorf("credentials file %s: bad NKey user seed (%w)", path, err)
	}
	raw, err := nkeys.ParseDecoratedJWT(b)
	if err != nil {
		return fmt.Errorf("credentials file %s: no user JWT in it", path)
	}
	claims, err := jwt.DecodeUserClaims(raw)
	if err != nil { // the decoder's error may quote the JWT: left out
		return fmt.Errorf("credentials file %s: no valid user JWT in it", path)
	}
	if claims.Subject != pub {
		return fmt.Errorf("credentials file %s: its JWT is for user %s, its seed for %s", path, claims.Subject, pub)
	}
	return nil
}

// CheckCA checks that a CA file holds at least one PEM certificate.
func CheckCA(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read TLS CA file: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return fmt.Errorf("TLS CA file %s: no PEM certificate in it", path)
	}
	return nil
}

// CheckKeyPair checks that a client certificate and its key load and match.
func CheckKeyPair(certFile, keyFile string) error {
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		return fmt.Errorf("TLS client certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return nil
}
