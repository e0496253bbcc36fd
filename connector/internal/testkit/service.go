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

// Runner is a route's worker, or anything else that runs until its context ends.
type Runner interface {
	Run(ctx context.Context) error
}

// RunWorker runs w until stop, which ends its context and waits for Run to return; t fails
// when Run returns an error, or has not returned 10s after stop (a hang, not a speed
// limit). stop is called when t ends too, and does its work once.
func RunWorker(t testing.TB, w Runner) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil {
			t.Errorf("Run() = %v", err)
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("worker did not stop in 10s")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
