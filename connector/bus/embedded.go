package bus

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// StartEmbedded starts an in-process NATS server with JetStream, storing in dataDir and
// taking clients on listen ("host:port"; port -1 picks a free one). It is what mailbus runs
// when no MAILBUS_NATS_URL is given, and what the tests run.
func StartEmbedded(listen, dataDir string) (*server.Server, error) {
	host, portText, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("embedded listen %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("embedded listen %q: bad port", listen)
	}
	opts := &server.Options{
		ServerName: "mailbus-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dataDir,
		NoSigs:     true,
		// The default 1 MB payload is too small for a message with a few inline
		// attachments; 8 MB is the largest the server accepts without a warning.
		MaxPayload: 8 << 20,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready on %s", listen)
	}
	return s, nil
}
