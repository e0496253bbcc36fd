//go:build benchprof

package main

import (
	"os"
	"runtime/pprof"
	"runtime/trace"
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
	stopProfile = func() {
		for _, stop := range stops {
			stop()
		}
	}
}
