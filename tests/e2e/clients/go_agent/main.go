// go_agent: a Go (crypto/tls, net/http) test agent. Built by the e2e tests with the machine's
// Go toolchain (stdlib only, offline). HTTP/1.1 unless -h2: HTTP/2 is disabled (empty TLSNextProto,
// ForceAttemptHTTP2 false). Makes -n calls from -parallel goroutines sharing one keep-alive
// Transport and prints one JSON line per call, as the Python agents do (clients/common.py).
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

func comm() string {
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func epoch(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func main() {
	host := flag.String("host", "localhost", "")
	port := flag.Int("port", 0, "")
	cafile := flag.String("cafile", "", "CA to trust")
	calls := flag.Int("n", 1, "calls in all")
	parallel := flag.Int("parallel", 1, "goroutines making the calls")
	model := flag.String("model", "e2e-gpt", "")
	maxTokens := flag.Int("max-tokens", 12, "")
	promptChars := flag.Int("prompt-chars", 200, "")
	tag := flag.String("tag", "", "x-test-client header")
	key := flag.String("key", "sk-test-AGENTBRAKE-SECRET-0001", "")
	h2 := flag.Bool("h2", false, "HTTP/2 by ALPN (net/http's own h2 transport) instead of HTTP/1.1")
	flag.Parse()

	pool := x509.NewCertPool()
	if *cafile != "" {
		pem, err := os.ReadFile(*cafile)
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintln(os.Stderr, "cannot read CA", *cafile, err)
			os.Exit(2)
		}
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
		ForceAttemptHTTP2:   false,
		MaxIdleConnsPerHost: *parallel,
	}
	if *h2 {
		tr.TLSNextProto = nil // the default: h2 when the server offers it
		tr.ForceAttemptHTTP2 = true
	}
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	url := fmt.Sprintf("https://%s:%d/v1/chat/completions", *host, *port)

	var mu sync.Mutex
	var wg sync.WaitGroup
	next := 0
	failed := false
	for w := 0; w < *parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= *calls {
					return
				}
				head := fmt.Sprintf("call %d from pid %d: ", i, os.Getpid())
				n := *promptChars - len(head)
				if n < 0 {
					n = 0
				}
				text := head + strings.Repeat("word ", n/5+1)[:n]
				body, _ := json.Marshal(map[string]any{
					"model": *model, "max_tokens": *maxTokens,
					"messages": []map[string]string{{"role": "user", "content": text}},
				})
				req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json")
				req.Header.Set("Authorization", "Bearer "+*key)
				if *tag != "" {
					req.Header.Set("x-test-client", *tag)
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					fmt.Fprintln(os.Stderr, "call", i, err)
					mu.Lock()
					failed = true
					mu.Unlock()
					return
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t1 := time.Now()
				var parsed struct {
					Usage *struct {
						Prompt     *int `json:"prompt_tokens"`
						Completion *int `json:"completion_tokens"`
					} `json:"usage"`
				}
				_ = json.Unmarshal(raw, &parsed)
				rec := map[string]any{
					"client": "go_agent", "call": i, "pid": os.Getpid(), "ppid": os.Getppid(),
					"comm": comm(), "status": resp.StatusCode, "model": *model, "stream": false,
					"api": "chat", "path": "/v1/chat/completions", "host": *host,
					"input_tokens": nil, "output_tokens": nil, "cache_read": 0, "cache_write": 0,
					"t_start": epoch(t0), "t_end": epoch(t1), "proto": resp.Proto,
				}
				if parsed.Usage != nil {
					rec["input_tokens"] = parsed.Usage.Prompt
					rec["output_tokens"] = parsed.Usage.Completion
				}
				line, _ := json.Marshal(rec)
				mu.Lock()
				os.Stdout.Write(append(line, '\n'))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed {
		os.Exit(1)
	}
}
