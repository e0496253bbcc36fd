// Command natsserver runs the NATS server with JetStream (file storage) exactly as mailbus
// embeds it, but in a process of its own. bench/run.sh uses it for the tool
// "mailbus_extnats", so mailbus's own peak RSS can be told apart from its embedded
// server's.
//
//	natsserver -listen 127.0.0.1:4222 -dir ./store
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/mailbus/mailbus/connector"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:4222", "client address")
	dir := flag.String("dir", "./natsserver-data", "JetStream store")
	flag.Parse()
	s, err := connector.StartEmbedded(*listen, *dir)
	if err != nil {
		log.Fatal(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	s.Shutdown()
	s.WaitForShutdown()
}
