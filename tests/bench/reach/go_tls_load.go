// go_tls_load.go — the Go crypto/tls workload of run_reach_bench.py (built by it with the
// host's go). go_tls_load PORT ITERS SIZE: connects to a TLS echo server on 127.0.0.1:PORT,
// prints "READY <pid>", waits for a line on stdin, makes ITERS round trips ((*Conn).Write of
// SIZE bytes, (*Conn).Read until the echo is back), prints one JSON line with the CPU time per
// round trip.
package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"
)

func cpu() float64 {
	var r syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r)
	return float64(r.Utime.Nano()+r.Stime.Nano()) / 1e9
}

func main() {
	port, _ := strconv.Atoi(os.Args[1])
	iters, _ := strconv.Atoi(os.Args[2])
	size, _ := strconv.Atoi(os.Args[3])
	c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	msg := make([]byte, size)
	buf := make([]byte, size)
	rt := func() {
		if _, err := c.Write(msg); err != nil {
			panic(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			panic(err)
		}
	}
	rt()
	fmt.Printf("READY %d\n", os.Getpid())
	bufio.NewReader(os.Stdin).ReadString('\n')
	c0, t0 := cpu(), time.Now()
	for i := 0; i < iters; i++ {
		rt()
	}
	secs, cs := time.Since(t0).Seconds(), cpu()-c0
	fmt.Printf("{\"mode\":\"go\",\"pid\":%d,\"rounds\":%d,\"seconds\":%f,\"cpu_seconds\":%f,\"cpu_ns_per_call\":%.1f,\"ns_per_call\":%.1f}\n",
		os.Getpid(), iters, secs, cs, cs*1e9/float64(iters), secs*1e9/float64(iters))
}
