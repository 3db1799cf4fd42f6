package stream

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"

	"github.com/nats-io/nats.go"

	"github.com/prometheus-streams/prometheus-streams/stream/natsauth"
)

// Security is how a connection checks the NATS server and proves itself to it: TLS, and
// at most one way of authenticating. Secrets live in files, read at each dial (so a
// rotated file is picked up by the next connection); no password, token, seed or
// credentials content ever appears in an error or a log, only the file's name.
type Security struct {
	// TLS. Setting any of these makes TLS required: a server that does not offer it is
	// refused (a tls:// URL requires it too).

	// CAFile holds the PEM certificates of the CAs that sign the server's certificate
	// (default: the system's roots).
	CAFile string
	// CertFile and KeyFile are the client certificate and its key (PEM), for a server
	// that verifies its clients; both or neither.
	CertFile, KeyFile string
	// ServerName is the name the server's certificate must carry (default: the host
	// of the URL connected to).
	ServerName string
	// InsecureSkipVerify accepts any server certificate. Never in production.
	InsecureSkipVerify bool

	// Authentication: at most one of user and password, token, NKey and credentials.

	// User and PasswordFile: a NATS user and the file holding its password (a
	// trailing newline is not part of it); both or neither.
	User, PasswordFile string
	// TokenFile holds a NATS authentication token (a trailing newline is not part of
	// it).
	TokenFile string
	// NKeySeedFile holds an NKey user seed (SU..., as `nk -gen user` writes it).
	NKeySeedFile string
	// CredentialsFile is a NATS .creds file (user JWT and NKey seed), for
	// decentralised (operator/account JWT) authentication.
	CredentialsFile string
}

// tlsWanted reports whether any TLS setting is given.
func (s *Security) tlsWanted() bool {
	return s.CAFile != "" || s.CertFile != "" || s.KeyFile != "" || s.ServerName != "" || s.InsecureSkipVerify
}

func (s *Security) validate() error {
	if (s.CertFile == "") != (s.KeyFile == "") {
		return errors.New("stream: TLS client certificate and key go together")
	}
	if (s.User == "") != (s.PasswordFile == "") {
		return errors.New("stream: NATS user and password file go together")
	}
	methods := 0
	for _, set := range []bool{s.User != "", s.TokenFile != "", s.NKeySeedFile != "", s.CredentialsFile != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		return errors.New("stream: more than one NATS authentication method (user/password, token, NKey seed, credentials)")
	}
	return nil
}

// natsOptions reads the files and returns the nats.go options that set up TLS and
// authentication. Its errors name the file at fault, never a secret.
func (s *Security) natsOptions() ([]nats.Option, error) {
	var opts []nats.Option
	if s.tlsWanted() {
		// nats.Secure sets the whole tls.Config, so it comes first; RootCAs and
		// ClientCert keep that config and add callbacks that load the files at each
		// handshake, overriding its RootCAs and Certificates.
		opts = append(opts, nats.Secure(&tls.Config{
			MinVersion:         tls.VersionTLS12,
			ServerName:         s.ServerName,
			InsecureSkipVerify: s.InsecureSkipVerify, //nolint:gosec // the operator's explicit choice
		}))
		if s.CAFile != "" {
			if err := natsauth.CheckCA(s.CAFile); err != nil {
				return nil, fmt.Errorf("stream: %w", err)
			}
			opts = append(opts, nats.RootCAs(s.CAFile))
		}
		if s.CertFile != "" {
			if err := natsauth.CheckKeyPair(s.CertFile, s.KeyFile); err != nil {
				return nil, fmt.Errorf("stream: %w", err)
			}
			opts = append(opts, nats.ClientCert(s.CertFile, s.KeyFile))
		}
	}
	switch {
	case s.User != "":
		password, err := natsauth.Secret("password file", s.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("stream: %w", err)
		}
		opts = append(opts, nats.UserInfo(s.User, password))
	case s.TokenFile != "":
		token, err := natsauth.Secret("token file", s.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("stream: %w", err)
		}
		opts = append(opts, nats.Token(token))
	case s.NKeySeedFile != "":
		// nats.go keeps only the file name and reads the seed again to sign each
		// server nonce.
		if err := natsauth.CheckSeed(s.NKeySeedFile); err != nil {
			return nil, fmt.Errorf("stream: %w", err)
		}
		o, err := nats.NkeyOptionFromSeed(s.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("stream: NKey seed file %s: %w", s.NKeySeedFile, err)
		}
		opts = append(opts, o)
	case s.CredentialsFile != "":
		if err := natsauth.CheckCreds(s.CredentialsFile); err != nil {
			return nil, fmt.Errorf("stream: %w", err)
		}
		opts = append(opts, nats.UserCredentials(s.CredentialsFile))
	}
	return opts, nil
}

// refusedError is a connect error where the server refused us, or we the server, on
// security grounds. It wraps ErrAuth and ErrUnreachable (no connection was made), and
// reads as ErrAuth's.
type refusedError struct {
	reason string
	err    error // wraps ErrAuth and the client's error
}

func (e *refusedError) Error() string   { return e.err.Error() }
func (e *refusedError) Unwrap() []error { return []error{e.err, ErrUnreachable} }

// refused explains err, from nats.Connect to where with sec, if the server refused our
// credentials or TLS failed; otherwise it returns nil. info is the last server INFO
// seen, if any.
func refused(where string, err error, sec *Security, info *serverInfo) error {
	reason := securityReason(err, sec, info)
	if reason == "" {
		return nil
	}
	return &refusedError{reason: reason, err: fmt.Errorf("%w: connect to %s: %s: %w", ErrAuth, where, reason, err)}
}

// AuthReason is a short explanation of an error wrapping ErrAuth (e.g. "authorization
// violation: ..."), for a log line; "" for any other error.
func AuthReason(err error) string {
	if r, ok := errors.AsType[*refusedError](err); ok {
		return r.reason
	}
	return ""
}

// securityReason says why a connect error is a refusal on security grounds, or "".
func securityReason(err error, sec *Security, info *serverInfo) string {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		header    tls.RecordHeaderError
		op        *net.OpError
	)
	clientCertRefused := "the server refused the client certificate (expired, not signed by a CA it trusts, or not for client authentication)"
	if sec.CertFile == "" {
		clientCertRefused = "the server requires a client certificate and none is configured"
	}
	switch {
	case errors.Is(err, nats.ErrAuthorization):
		return "authorization violation: the server refused the credentials (user and password, token, NKey or .creds), or none were given"
	case errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAccountAuthExpired):
		return "authentication expired: the credentials are past their expiry"
	case errors.Is(err, nats.ErrAuthRevoked):
		return "authentication revoked: the credentials were revoked"
	case errors.As(err, &unknownCA):
		return "the server's certificate is not signed by a trusted CA (the CA file, or the system's roots without one)"
	case errors.As(err, &hostname):
		return "the server's certificate is not valid for the name connected to (the URL's host, or the TLS server name)"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "the server's certificate has expired or is not yet valid"
	case errors.As(err, &invalid), errors.As(err, &verify):
		return "the server's certificate did not verify"
	case errors.As(err, &op) && op.Op == "remote error" && strings.HasPrefix(op.Err.Error(), "tls:"):
		// A TLS alert from the server: with TLS 1.3 the server checks the client's
		// certificate after the client has finished its side of the handshake, so
		// the alert comes with the first read.
		return clientCertRefused
	case info != nil && info.TLSVerify && isConnDropped(err):
		// The same, but the server's close overtook its alert (our first write after
		// the handshake found the connection reset): a server that verifies client
		// certificates dropping us right after the handshake has refused ours.
		return clientCertRefused + " (the connection was closed after the TLS handshake)"
	case errors.Is(err, nats.ErrSecureConnWanted):
		return "TLS is configured but the server does not offer it"
	case errors.Is(err, nats.ErrSecureConnRequired):
		return "the server requires TLS"
	case errors.As(err, &header):
		return "TLS handshake failed: the server does not speak TLS there"
	}
	return ""
}

// isConnDropped reports whether err is the peer closing or resetting the connection.
func isConnDropped(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// serverInfo is what of a NATS server's INFO explains a failed connection.
type serverInfo struct {
	TLSRequired  bool `json:"tls_required"`
	TLSVerify    bool `json:"tls_verify"` // client certificates required and verified
	AuthRequired bool `json:"auth_required"`
}

// infoDialer dials for nats.go as its default dialer does, and keeps the INFO line
// the server last sent in plain text at the start of a connection, to tell a server
// refusing our client certificate from one going away (see securityReason).
type infoDialer struct {
	d    net.Dialer
	mu   sync.Mutex
	info *serverInfo // of the last connection dialed; nil: not seen
}

var _ nats.CustomDialer = (*infoDialer)(nil)

func (d *infoDialer) Dial(network, address string) (net.Conn, error) {
	d.mu.Lock()
	d.info = nil
	d.mu.Unlock()
	c, err := d.d.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &infoConn{Conn: c, d: d}, nil
}

// lastInfo is the INFO of the last connection dialed, nil if none was seen.
func (d *infoDialer) lastInfo() *serverInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.info
}

// maxInfoLine bounds what infoConn keeps while looking for the end of the INFO line.
const maxInfoLine = 64 << 10

// infoConn passes everything through, copying what it reads until the first line is
// complete. nats.go reads from one goroutine at a time.
type infoConn struct {
	net.Conn
	d    *infoDialer
	head []byte
	done bool
}

func (c *infoConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.done && n > 0 {
		c.head = append(c.head, p[:n]...)
		if line, _, ok := bytes.Cut(c.head, []byte("\r\n")); ok {
			c.done = true
			if args, ok := bytes.CutPrefix(line, []byte("INFO ")); ok {
				var info serverInfo
				if json.Unmarshal(args, &info) == nil {
					c.d.mu.Lock()
					c.d.info = &info
					c.d.mu.Unlock()
				}
			}
			c.head = nil
		} else if len(c.head) > maxInfoLine {
			c.done, c.head = true, nil
		}
	}
	return n, err
}
