// Command natsserver runs the NATS server with JetStream (file storage) exactly as mailbus
// embeds it, but in a process of its own. bench/run.sh uses it for the tool
// "mailbus_extnats", so mailbus's own peak RSS can be told apart from its embedded
// server's, and for the tool "rawpipe" (bench/rawpipe), so both store into the same server.
//
//	natsserver -listen 127.0.0.1:4222 -dir ./store
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/mailbus/mailbus/connector/bus"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:4222", "client address")
	dir := flag.String("dir", "./natsserver-data", "JetStream store")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	s, err := bus.StartEmbedded(*listen, *dir)
	if err != nil {
		log.Fatal(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	s.Shutdown()
	s.WaitForShutdown()
}
