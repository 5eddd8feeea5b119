// go_ollama: an Ollama client over plain HTTP (net/http, stdlib only), for tests/e2e/test_plain.py.
// Go makes raw syscalls (never the C library's send/recv): its bytes are read at
// internal/poll.(*FD). Prints one JSON line per call: pid, status, input/output tokens as the
// final NDJSON object (or the one object of "stream": false) reported, t_start, t_end.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

func epoch(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func main() {
	host := flag.String("host", "127.0.0.1", "")
	port := flag.Int("port", 0, "")
	calls := flag.Int("n", 1, "calls, one after another on one keep-alive connection")
	api := flag.String("api", "chat", "chat (/api/chat) or generate (/api/generate)")
	stream := flag.Bool("stream", true, "NDJSON stream (Ollama's default) or one JSON object")
	model := flag.String("model", "llama3.2", "")
	numPredict := flag.Int("num-predict", 12, "options.num_predict: output tokens")
	promptChars := flag.Int("prompt-chars", 200, "")
	tag := flag.String("tag", "", "x-test-client header")
	waitFile := flag.String("wait-file", "", "before each call after the first, wait until this file exists")
	flag.Parse()

	client := &http.Client{Timeout: 120 * time.Second}
	url := fmt.Sprintf("http://%s:%d/api/%s", *host, *port, *api)
	for i := 0; i < *calls; i++ {
		for i > 0 && *waitFile != "" {
			if _, err := os.Stat(*waitFile); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		head := fmt.Sprintf("call %d from pid %d: ", i, os.Getpid())
		n := *promptChars - len(head)
		if n < 0 {
			n = 0
		}
		text := head + strings.Repeat("word ", n/5+1)[:n]
		b := map[string]any{"model": *model, "stream": *stream, "options": map[string]int{"num_predict": *numPredict}}
		if *api == "chat" {
			b["messages"] = []map[string]string{{"role": "user", "content": text}}
		} else {
			b["prompt"] = text
		}
		body, _ := json.Marshal(b)
		req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if *tag != "" {
			req.Header.Set("x-test-client", *tag)
		}
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			fmt.Fprintln(os.Stderr, "call", i, err)
			os.Exit(1)
		}
		var in, out *int
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var obj struct {
				Done   bool `json:"done"`
				Prompt *int `json:"prompt_eval_count"`
				Eval   *int `json:"eval_count"`
			}
			if json.Unmarshal(sc.Bytes(), &obj) == nil && obj.Done {
				in, out = obj.Prompt, obj.Eval
			}
		}
		resp.Body.Close()
		t1 := time.Now()
		line, _ := json.Marshal(map[string]any{
			"client": "go_ollama", "call": i, "pid": os.Getpid(), "status": resp.StatusCode,
			"input_tokens": in, "output_tokens": out, "t_start": epoch(t0), "t_end": epoch(t1),
		})
		os.Stdout.Write(append(line, '\n'))
	}
}
