//go:build benchprof

package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"time"
)

// A benchmark build (`go build -tags benchprof`, bench/run.sh with PPROF=dir) writes a CPU
// profile of the whole process, from start to exit, to MAILBUS_BENCH_CPUPROFILE, and an
// execution trace (`go tool trace`: where the goroutines wait) to MAILBUS_BENCH_TRACE. The
// released binary has neither the variables nor the code.
func init() {
	var stops []func()
	if path := os.Getenv("MAILBUS_BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			panic(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			panic(err)
		}
		stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
	}
	if path := os.Getenv("MAILBUS_BENCH_TRACE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			panic(err)
		}
		if err := trace.Start(f); err != nil {
			panic(err)
		}
		stops = append(stops, func() { trace.Stop(); f.Close() })
	}
	if path := os.Getenv("MAILBUS_BENCH_MEMPROFILE"); path != "" {
		stops = append(stops, sampleMemory(path))
	}
	stopProfile = func() {
		for _, stop := range stops {
			stop()
		}
	}
}

// sampleMemory reads the runtime's memory statistics every 50 ms and, at exit, writes to
// stderr the peak of each, and to path the heap profile taken at the peak of the heap in use:
// what the process's RSS is made of.
func sampleMemory(path string) func() {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var m, peak runtime.MemStats
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				fmt.Fprintf(os.Stderr, "peak MiB: heap in use %.1f, heap sys-released %.1f, stacks %.1f, other sys %.1f, total sys %.1f; GCs %d\n",
					mib(peak.HeapInuse), mib(peak.HeapSys-peak.HeapReleased), mib(peak.StackSys), mib(peak.OtherSys+peak.GCSys+peak.MSpanSys+peak.MCacheSys+peak.BuckHashSys), mib(peak.Sys), m.NumGC)
				return
			case <-tick.C:
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.HeapInuse {
				if f, err := os.Create(path); err == nil {
					pprof.Lookup("heap").WriteTo(f, 0)
					f.Close()
				}
			}
			peak.HeapInuse = max(peak.HeapInuse, m.HeapInuse)
			peak.HeapSys = max(peak.HeapSys, m.HeapSys-m.HeapReleased)
			peak.StackSys = max(peak.StackSys, m.StackSys)
			peak.OtherSys = max(peak.OtherSys, m.OtherSys+m.GCSys+m.MSpanSys+m.MCacheSys+m.BuckHashSys)
			peak.Sys = max(peak.Sys, m.Sys)
		}
	}()
	return func() { close(done); <-finished }
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }
