package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key
// as PEM files in dir, and returns their paths and the certificate.
func selfSigned(t *testing.T, dir string) (certPath, keyPath string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "spigot gateway test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath, cert
}

// TestGatewayTLS: with --tls-cert and --tls-key the gateway serves HTTPS:
// a client trusting the certificate gets a completion through it, one
// that does not is refused by its TLS check, and plain HTTP gets no
// answer from the API.
func TestGatewayTLS(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			io.WriteString(w, `{"status":"ok"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"over TLS","finish_reason":"stop"}]}`)
	}))
	defer up.Close()
	dir := t.TempDir()
	certPath, keyPath, cert := selfSigned(t, dir)
	cfg := filepath.Join(dir, "gateway.yaml")
	yaml := fmt.Sprintf("upstreams:\n  - {name: u, kind: openai, url: %s, models: [m]}\nhealth: {interval: 100ms}\n", up.URL)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- runGateway(ctx, func() {}, []string{"--config", cfg, "--addr", "127.0.0.1:0", "--tls-cert", certPath, "--tls-key", keyPath},
			stdio{nil, io.Discard, io.Discard}, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("gateway: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not start")
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()

	deadline := time.Now().Add(10 * time.Second)
	var body string
	for {
		resp, err := client.Post("https://"+addr+"/v1/completions", "application/json", strings.NewReader(`{"model":"m","prompt":"x"}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		if resp.StatusCode == 200 || time.Now().After(deadline) {
			if resp.TLS == nil || resp.StatusCode != 200 || !strings.Contains(body, "over TLS") {
				t.Fatalf("completion over HTTPS = %d (TLS %v) %s", resp.StatusCode, resp.TLS != nil, body)
			}
			break
		}
		time.Sleep(50 * time.Millisecond) // the upstream's first check
	}
	_, err := http.Get("https://" + addr + "/health")
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client not trusting the certificate: %v, want a certificate error", err)
	}
	if resp, err := http.Get("http://" + addr + "/health"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP got 200 from the HTTPS gateway")
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("gateway ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not stop")
	}

	for _, args := range [][]string{
		{"--config", cfg, "--tls-cert", certPath},
		{"--config", cfg, "--tls-cert", keyPath, "--tls-key", keyPath},
	} {
		err := runGateway(context.Background(), func() {}, args, stdio{nil, io.Discard, io.Discard}, nil)
		if err == nil || !strings.Contains(err.Error(), "tls") && !strings.Contains(err.Error(), "TLS") {
			t.Errorf("gateway %q = %v, want a TLS error", args, err)
		}
	}
}
