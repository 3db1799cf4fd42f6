package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// TestURLCredentials: a URL's password is never shown (xxxxx, as Prometheus shows it),
// and http URLs with credentials are refused as the sinks refuse them.
func TestURLCredentials(t *testing.T) {
	const pw = "hunter2pw"
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"push gateway", "push_gateway: {url: 'http://u:" + pw + "@h:9091'}\n", []string{"line 1: push_gateway.url", "http://u:xxxxx@h:9091", "has credentials"}},
		{"push gateway query", "push_gateway: {url: 'http://h:9091/?a=b'}\n", []string{"push_gateway.url", "query"}},
		{"target", "jobs:\n  j:\n    targets: [{url: 'http://u:" + pw + "@h:1/m'}]\n", []string{"line 3: jobs.j.targets[0].url", "http://u:xxxxx@h:1/m", "has credentials", "basic_auth"}},
		{"target does not parse", "jobs:\n  j:\n    targets: [{name: a, url: 'http://u:" + pw + "@[::1'}]\n", []string{"jobs.j.targets[0].url", "http://xxxxx@[::1", "does not parse"}},
		{"remote write", "remote_write: [{url: 'http://u:" + pw + "@h/api/v1/write'}]\n", []string{"remote_write[0].url", "xxxxx", "has credentials"}},
		{"nats url does not parse", "poller_stream: {cluster_id: c, urls: 'nats://u:" + pw + "@h:x'}\n", []string{"poller_stream.urls[0]", "nats://xxxxx@h:x"}},
		{"nats url not nats", "poller_stream: {cluster_id: c, urls: 'http://u:" + pw + "@h:4222'}\n", []string{"poller_stream.urls[0]", "http://u:xxxxx@h:4222"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := parseErr(t, tt.yaml)
			contains(t, msg, tt.want...)
			if strings.Contains(msg, pw) {
				t.Errorf("error shows the password: %s", msg)
			}
		})
	}
	// NATS URLs may carry credentials (nats.go uses them); --check-config hides them.
	c, err := Parse([]byte("poller_stream: {cluster_id: c, urls: 'nats://u:" + pw + "@h:4222,nats://tok" + pw + "@h2:4222'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), pw) || !strings.Contains(string(out), "nats://u:xxxxx@h:4222") {
		t.Errorf("redacted config:\n%s", out)
	}
	if d := c.PollerStream.Describe(); strings.Contains(d, pw) {
		t.Errorf("Describe shows the password: %s", d)
	}
}

// TestSecurityFiles reads the stream's secret files and TLS files as the dial does, and
// the HTTP clients' and listeners' TLS files as the binaries do: one they would refuse
// is a config error naming its key, never quoting the file.
func TestSecurityFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	user, _ := nkeys.CreateUser()
	userSeed, _ := user.Seed()
	account, _ := nkeys.CreateAccount()
	accountSeed, _ := account.Seed()
	userPub, _ := user.PublicKey()
	token, err := jwt.NewUserClaims(userPub).Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(token, userSeed)
	if err != nil {
		t.Fatal(err)
	}
	good := map[string]string{
		"seed":  write("user.nk", string(userSeed)+"\n"),
		"creds": write("user.creds", string(creds)),
		"pw":    write("pw", "secret\n"),
	}
	garbage := write("garbage", "GARBAGE-CONTENT\n")
	accountFile := write("account.nk", string(accountSeed)+"\n")
	empty := write("empty", "\n")
	stream := func(keys string) string {
		return "poller_stream: {cluster_id: c, urls: 'nats://h:4222', " + keys + "}\n"
	}
	for _, ok := range []string{
		stream("nkey_seed_file: " + good["seed"]),
		stream("credentials_file: " + good["creds"]),
		stream("user: u, password_file: " + good["pw"]),
		stream("token_file: " + good["pw"]),
	} {
		if _, err := Parse([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"garbage seed", stream("nkey_seed_file: " + garbage), []string{"poller_stream.nkey_seed_file", garbage, "no NKey seed"}},
		{"account seed", stream("nkey_seed_file: " + accountFile), []string{"poller_stream.nkey_seed_file", "not an NKey user seed"}},
		{"garbage creds", stream("credentials_file: " + garbage), []string{"poller_stream.credentials_file", garbage, "no NKey user seed"}},
		{"seed as creds", stream("credentials_file: " + good["seed"]), []string{"poller_stream.credentials_file", "user JWT"}},
		{"empty password", stream("user: u, password_file: " + empty), []string{"poller_stream.password_file", "is empty"}},
		{"empty token", "receiver_stream: [{cluster_id: c, client_id: d, urls: 'nats://h:4222', token_file: " + empty + "}]\n", []string{"receiver_stream[0].token_file", "is empty"}},
		{"missing creds", stream("credentials_file: /nonexistent/x.creds"), []string{"poller_stream.credentials_file", "no such file"}},
		{"stream ca", stream("tls: {ca: " + garbage + "}"), []string{"poller_stream.tls.ca", "no PEM certificate"}},
		{"top-level cert", "tls: {cert: " + garbage + ", key: " + garbage + "}\n", []string{"tls.cert", "PEM"}},
		{"job ca", "jobs:\n  j:\n    targets: [{url: 'http://h:1/'}]\n    tls_config: {ca_file: " + garbage + "}\n", []string{"jobs.j", "CA cert"}},
		{"gateway cert", "push_gateway: {url: 'http://h:1', tls_config: {cert_file: " + garbage + ", key_file: " + garbage + "}}\n", []string{"push_gateway", "client cert"}},
		{"web config", "monitor: {web_config_file: " + garbage + "}\n", []string{"monitor.web_config_file", garbage}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := parseErr(t, tt.yaml)
			contains(t, msg, tt.want...)
			for _, secret := range []string{"GARBAGE-CONTENT", string(userSeed), string(accountSeed), "secret"} {
				if strings.Contains(msg, secret) {
					t.Errorf("error quotes the file: %s", msg)
				}
			}
		})
	}
	// The top-level tls is checked once, not again for each section that uses it.
	msg := parseErr(t, "tls: {ca: "+garbage+"}\n"+stream("topic: p"))
	if strings.Count(msg, "no PEM certificate") != 1 {
		t.Errorf("top-level tls reported %d times:\n%s", strings.Count(msg, "no PEM certificate"), msg)
	}
}
