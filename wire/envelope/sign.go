package envelope

import (
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/nats-io/nkeys"
	"google.golang.org/protobuf/encoding/protowire"
)

// WithSigner makes Encode sign every message with kp, an NKey user key pair with its
// seed (as nkeys.FromSeed or nkeys.ParseDecoratedNKey return it for an "SU..." seed).
// The message then carries the key's public key (U...) and an ed25519 signature over
// everything before the signature: the header and every field. The Codec keeps its own
// copy of the private key, so the caller may Wipe kp once NewCodec returned.
func WithSigner(kp nkeys.KeyPair) Option {
	return func(c *Codec) error {
		if kp == nil {
			return errors.New("envelope: WithSigner: nil key pair")
		}
		seed, err := kp.Seed()
		if err != nil {
			return fmt.Errorf("envelope: WithSigner: %w", err)
		}
		prefix, raw, err := nkeys.DecodeSeed(seed)
		if err != nil {
			return fmt.Errorf("envelope: WithSigner: %w", err)
		}
		defer clear(raw)
		if prefix != nkeys.PrefixByteUser || len(raw) != ed25519.SeedSize {
			return fmt.Errorf("envelope: WithSigner: an NKey %v key; envelopes are signed with user keys (seed SU..., public key U...)", prefix)
		}
		priv := ed25519.NewKeyFromSeed(raw)
		pub, err := nkeys.Encode(nkeys.PrefixByteUser, priv.Public().(ed25519.PublicKey))
		if err != nil {
			return fmt.Errorf("envelope: WithSigner: %w", err)
		}
		c.signer = &signer{pub: string(pub), priv: priv}
		return nil
	}
}

// Signer returns the public key (U...) Encode signs with, or "" when it does not sign.
func (c *Codec) Signer() string {
	if c.signer == nil {
		return ""
	}
	return c.signer.pub
}

// signer is a Codec's signing key.
type signer struct {
	pub  string // NKey user public key, as written in field signer
	priv ed25519.PrivateKey
}

// size is what the signing fields add to a message: signer and signature.
func (s *signer) size() int {
	return sizeString(fieldSigner, s.pub) + protowire.SizeTag(fieldSignature) + protowire.SizeBytes(ed25519.SignatureSize)
}

// appendSignature appends the signer field, then the signature over b[start:] and the
// signer: the message so far, from its magic on.
func (s *signer) appendSignature(b []byte, start int) []byte {
	b = appendString(b, fieldSigner, s.pub)
	sig := sign(s.priv, b[start:])
	b = protowire.AppendTag(b, fieldSignature, protowire.BytesType)
	return protowire.AppendBytes(b, sig)
}

// sign is the signature of a message's signed bytes. BenchmarkSign measures it.
func sign(priv ed25519.PrivateKey, signed []byte) []byte { return ed25519.Sign(priv, signed) }

// verify checks the signature of message msg, whose fields w holds, over the bytes as
// received. An unsigned message passes (Signer stays ""); the signer key without a
// signature, or the other way round, does not: nothing this package writes does that,
// and a message stripped of its signature must not keep the key's name.
func (w *wireFields) verify(msg []byte) error {
	signer := w.strs[strSigner]
	switch {
	case !w.hasSig && !w.hasSigner:
		return nil
	case !w.hasSig:
		return w.badSignature("a signer key but no signature")
	case len(signer) == 0:
		return w.badSignature("a signature but no signer key")
	case len(w.sig) != ed25519.SignatureSize:
		return w.badSignature(fmt.Sprintf("signature is %d bytes, want %d", len(w.sig), ed25519.SignatureSize))
	}
	pub, err := nkeys.Decode(nkeys.PrefixByteUser, signer)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return w.badSignature("the signer is not an NKey user public key")
	}
	if !ed25519.Verify(pub, msg[:headerLen+w.sigAt], w.sig) {
		return w.badSignature("the signature does not verify: the message was changed after signing, or signed by another key")
	}
	return nil
}

// SignatureError is the error Decode returns for a signed message whose signature does
// not verify. It wraps ErrBadSignature and carries what the message claims, none of it
// verified, so a drain can log who the forgery or corruption pretends to be. The
// strings are cut to 128 bytes.
type SignatureError struct {
	Signer                   string // the signer key as the message gives it
	Publisher, Job, Instance string // as the message gives them, if parsed before the fault
	Reason                   string // what is wrong
}

func (e *SignatureError) Error() string {
	return fmt.Sprintf("%v: %s (signer %q, job %q, instance %q, publisher %q)",
		ErrBadSignature, e.Reason, e.Signer, e.Job, e.Instance, e.Publisher)
}

func (e *SignatureError) Unwrap() error { return ErrBadSignature }

// badSignature is a SignatureError for the fields parsed so far.
func (w *wireFields) badSignature(reason string) error {
	return &SignatureError{
		Signer:    clip(w.strs[strSigner]),
		Publisher: clip(w.strs[strPublisher]),
		Job:       clip(w.strs[strJob]),
		Instance:  clip(w.strs[strInstance]),
		Reason:    reason,
	}
}

// clip copies at most the first 128 bytes of b: claims in an error end up in logs.
func clip(b []byte) string {
	return string(b[:min(len(b), 128)])
}
