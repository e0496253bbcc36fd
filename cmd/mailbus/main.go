// Command mailbus turns mailboxes into NATS JetStream event streams.
//
//	mailbus [serve]   run the connector (configured by MAILBUS_* variables)
//	mailbus version   print the version
//	mailbus healthcheck  ask a running mailbus's /healthz (the image's HEALTHCHECK)
//	mailbus demo [-json] [-every 5s]  embedded NATS and IMAP with sample mail, events printed
//
// and the operator's commands over the control subjects of a running mailbus (cli.go):
//
//	mailbus apply -f FILE [--dry-run] [--prune]
//	mailbus get connections|routes [NAME] [-o table|json|yaml]
//	mailbus status [ROUTE]
//	mailbus test CONNECTION
//	mailbus log CONNECTION [--since T] [-o FILE]
//	mailbus delete connection|route NAME
//
// Exit status: 0 done, 1 the command failed or was refused, 2 a wrong call.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/kelseyhightower/envconfig"

	"github.com/mailbus/mailbus/connector"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3"; when empty, the
// module version from the build info is used.
var version string

// usageError is an error in how mailbus was called (exit status 2) rather than in what it
// did (exit status 1).
type usageError struct{ error }

// stopProfile ends the CPU profile of a benchmark build (profile.go, build tag benchprof);
// in the real binary it does nothing.
var stopProfile = func() {}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout)
	stopProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mailbus:", err)
		if errors.As(err, new(usageError)) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// run is the whole program: args are the command-line arguments after the program name.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "serve":
		return serve(ctx)
	case "version":
		fmt.Fprintln(stdout, "mailbus", buildVersion())
		return nil
	case "healthcheck":
		cfg, err := loadConfig()
		if err != nil {
			return err
		}
		return connector.Healthcheck(ctx, cfg.HTTPAddr)
	case "demo":
		return demo(ctx, args[1:], stdout)
	}
	if _, ok := cliCommands[cmd]; ok {
		return runCLI(ctx, cmd, args[1:], stdout)
	}
	return usageError{fmt.Errorf("unknown command %q (want serve, version, healthcheck, demo, apply, get, status, test, log or delete)", cmd)}
}

// serve runs the connector until ctx ends.
func serve(ctx context.Context) error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	logger, err := newLogger(cfg, os.Stderr)
	if err != nil {
		return err
	}
	c, err := connector.New(cfg, logger, connector.WithVersion(buildVersion()))
	if err != nil {
		return err
	}
	return c.Run(ctx)
}

// loadConfig reads the MAILBUS_* environment.
func loadConfig() (connector.Config, error) {
	var cfg connector.Config
	if err := envconfig.Process(connector.EnvPrefix, &cfg); err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// newLogger makes the process log: JSON, or text with MAILBUS_LOG_FORMAT=text, at
// MAILBUS_LOG_LEVEL (debug, info, warn, error).
func newLogger(cfg connector.Config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("MAILBUS_LOG_LEVEL %q: want debug, info, warn or error", cfg.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(cfg.LogFormat) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("MAILBUS_LOG_FORMAT %q: want json or text", cfg.LogFormat)
}

// buildVersion is version, else the module version of the build, else "dev".
func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
