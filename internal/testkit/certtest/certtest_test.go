package certtest

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestChains(t *testing.T) {
	ca, other := NewCA(t, "ca"), NewCA(t, "other")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	srv.TLS = ca.ServerTLS(true)
	srv.StartTLS()
	defer srv.Close()
	get := func(client Pair, roots *x509.CertPool) error {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{client.TLS}}}}
		resp, err := c.Get(srv.URL)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(ca.Client("c"), ca.Pool); err != nil {
		t.Errorf("good client: %v", err)
	}
	if err := get(ca.Client("c"), other.Pool); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("wrong CA trusted: %v", err)
	}
	if err := get(other.Client("c"), ca.Pool); err == nil {
		t.Error("client of another CA accepted")
	}
	if err := get(ca.ExpiredClient("c"), ca.Pool); err == nil {
		t.Error("expired client accepted")
	}
}
