//go:build benchprof

package main

import (
	"os"
	"runtime/pprof"
)

// A benchmark build (`go build -tags benchprof`, bench/run.sh with PPROF=dir) writes a CPU
// profile of the whole process, from start to exit, to MAILBUS_BENCH_CPUPROFILE. The
// released binary has neither the variable nor the code.
func init() {
	path := os.Getenv("MAILBUS_BENCH_CPUPROFILE")
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		panic(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		panic(err)
	}
	stopProfile = func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
