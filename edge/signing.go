package edge

import (
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nkeys"
)

// LoadSigner reads the NKey user seed scrape-once signs its envelopes with, from a file
// as the nats tooling writes it: a bare seed (`nk -gen user`, optionally followed by
// the public key, `nk -gen user -pubout`), or a decorated seed block as in a .creds
// file. Its errors name the file and what is wrong, never the file's content. It also
// reports whether the file is readable by group or others, for a warning.
func LoadSigner(path string) (kp nkeys.KeyPair, loose bool, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, false, err
	}
	if !fi.Mode().IsRegular() {
		return nil, false, fmt.Errorf("%s: not a regular file", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, false, err
	}
	defer clear(data)
	kp, err = nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %s", path, seedProblem(err))
	}
	seed, err := kp.Seed()
	if err != nil || len(seed) < 2 || seed[1] != 'U' {
		kp.Wipe()
		return nil, false, fmt.Errorf("%s: not an NKey user seed (SU...): generate one with `nk -gen user -pubout`", path)
	}
	return kp, fi.Mode().Perm()&0o077 != 0, nil
}

// seedProblem describes an nkeys parse error. Those are fixed strings, or a base32
// error naming a byte offset: never the data.
func seedProblem(err error) string {
	if errors.Is(err, nkeys.ErrNoSeedFound) {
		return "no NKey seed found (want a line starting SU, as `nk -gen user` writes)"
	}
	return "the NKey seed is malformed (" + err.Error() + ")"
}
