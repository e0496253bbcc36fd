package testkit

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Service is what RunService runs: a *connector.Connector, which this package cannot name
// (the connector package's own tests import it).
type Service interface {
	Run(ctx context.Context) error
	WaitReady(ctx context.Context) error
	Close()
}

// RunService runs s and waits up to 30s for it to be ready. stop closes s and fails t when
// Run returned an error; it is called when t ends too, and does its work once.
func RunService(t testing.TB, s Service) (stop func()) {
	t.Helper()
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(context.Background()) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			s.Close()
			if err := <-runErr; err != nil {
				t.Errorf("Run() = %v", err)
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.WaitReady(ctx); err != nil {
		s.Close()
		t.Fatalf("WaitReady() = %v; Run() = %v", err, <-runErr)
	}
	t.Cleanup(stop)
	return stop
}
