package main

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus-streams/prometheus-streams/config"
	"github.com/prometheus-streams/prometheus-streams/internal/testkit/certtest"
)

// TestTrustedKeysCopyEveryField: each field of a trust entry reaches the drain, so that
// a key added to the config's trust section cannot be left out of the mapping.
func TestTrustedKeysCopyEveryField(t *testing.T) {
	p := &config.TrustedPublisher{
		PublicKey: "U1", Jobs: []string{"j"}, Instances: []string{"i.*"},
		Publishers: []string{"p"}, Sites: []string{"s"}, Labels: map[string]string{"a": "b"},
	}
	src := reflect.ValueOf(p).Elem()
	for i := range src.NumField() {
		if src.Field(i).IsZero() {
			t.Fatalf("test entry leaves %s unset", src.Type().Field(i).Name)
		}
	}
	keys := trustedKeys([]*config.TrustedPublisher{p, nil})
	if len(keys) != 2 || keys[1] != nil {
		t.Fatalf("keys = %v", keys)
	}
	dst := reflect.ValueOf(keys[0]).Elem()
	for i := range src.NumField() {
		name := src.Type().Field(i).Name
		f := dst.FieldByName(name)
		if !f.IsValid() || !reflect.DeepEqual(f.Interface(), src.Field(i).Interface()) {
			t.Errorf("%s not copied", name)
		}
	}
}

// TestPushGatewayOptions: the push_gateway section's URL, timeout and HTTP client
// settings (TLS, basic auth) reach the gateway's client as the config holds them.
func TestPushGatewayOptions(t *testing.T) {
	ca := certtest.NewCA(t, "pgw-ca")
	client := ca.Client("drain")
	password := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(password, []byte("pa55\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(fmt.Appendf(nil, `push_gateway:
  url: https://127.0.0.1:9091/prefix
  timeout: 7s
  tls_config: {ca_file: %q, cert_file: %q, key_file: %q}
  basic_auth: {username: drain, password_file: %q}
`, ca.CertFile, client.CertFile, client.KeyFile, password))
	if err != nil {
		t.Fatal(err)
	}
	o := pushGatewayOptions(cfg.PushGateway)
	if o.URL != "https://127.0.0.1:9091/prefix" || o.Timeout != 7*time.Second || o.UserAgent == "" {
		t.Errorf("options = URL %q, timeout %s, User-Agent %q", o.URL, o.Timeout, o.UserAgent)
	}
	h := o.HTTPClientConfig
	if !reflect.DeepEqual(h, cfg.PushGateway.HTTPClientConfig) || h.TLSConfig.CAFile != ca.CertFile || h.TLSConfig.KeyFile != client.KeyFile ||
		h.BasicAuth == nil || h.BasicAuth.Username != "drain" || h.BasicAuth.PasswordFile != password || !h.FollowRedirects {
		t.Errorf("HTTP client settings = %+v, want the section's", h)
	}
}
