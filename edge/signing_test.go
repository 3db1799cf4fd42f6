package edge

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/prometheus-streams/prometheus-streams/wire/envelope"
)

func TestLoadSigner(t *testing.T) {
	user, _ := nkeys.CreateUser()
	seed, _ := user.Seed()
	pub, _ := user.PublicKey()
	account, _ := nkeys.CreateAccount()
	accountSeed, _ := account.Seed()
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	creds := "-----BEGIN NATS USER JWT-----\neyJhbGciOi.fake.jwt\n------END NATS USER JWT------\n\n" +
		"************************* IMPORTANT *************************\n" +
		"-----BEGIN USER NKEY SEED-----\n" + string(seed) + "\n------END USER NKEY SEED------\n"

	for name, content := range map[string]string{
		"bare":        string(seed),
		"nk -pubout":  string(seed) + "\n" + pub + "\n",
		"crlf":        string(seed) + "\r\n",
		"creds block": creds,
	} {
		kp, loose, err := LoadSigner(write(name, content, 0o400))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got, _ := kp.PublicKey(); got != pub {
			t.Errorf("%s: public key %s, want %s", name, got, pub)
		}
		if loose {
			t.Errorf("%s: mode 0400 reported as readable by others", name)
		}
		c, err := envelope.NewCodec(envelope.WithSigner(kp))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.Signer() != pub {
			t.Errorf("%s: codec signs as %s", name, c.Signer())
		}
		c.Close()
	}
	if _, loose, err := LoadSigner(write("loose", string(seed), 0o644)); err != nil || !loose {
		t.Errorf("mode 0644: loose %v, err %v; want a warning", loose, err)
	}

	broken := []byte(seed)
	broken[10] ^= 0x01
	for name, content := range map[string]string{
		"empty":        "",
		"public key":   pub + "\n",
		"account seed": string(accountSeed),
		"broken seed":  string(broken),
		"not base32":   "SU" + strings.Repeat("!", 56),
		"short":        string(seed[:20]),
	} {
		_, _, err := LoadSigner(write(name, content, 0o400))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		t.Logf("%s: %v", name, err)
		for _, secret := range []string{string(seed), string(seed[2:20]), string(accountSeed[2:20]), string(broken[2:20])} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: error %q shows the seed", name, err)
			}
		}
	}
	if _, _, err := LoadSigner(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
	if _, _, err := LoadSigner(dir); err == nil {
		t.Error("a directory accepted")
	}
}
