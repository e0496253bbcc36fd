package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/client"
	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/schemas"
)

// The operator's commands: they speak the control subjects of a running mailbus, with the
// same MAILBUS_NATS_* environment. Human output by default, -o json for machines. A
// refused or failed command is exit status 1, a wrong call 2.

// cliCommands are the commands of the CLI, by name.
var cliCommands = map[string]func(context.Context, *client.Client, []string, io.Writer) error{
	"apply":  cmdApply,
	"get":    cmdGet,
	"status": cmdStatus,
	"test":   cmdTest,
	"log":    cmdLog,
	"delete": cmdDelete,
}

// runCLI runs one CLI command: its flags are checked before NATS is dialled.
func runCLI(ctx context.Context, cmd string, args []string, stdout io.Writer) error {
	f := cliCommands[cmd]
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintln(stdout, cliUsage[cmd])
		return nil
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	// Parse once without a client to refuse a wrong call before connecting.
	if err := f(ctx, nil, args, io.Discard); err != nil && !errors.Is(err, errNeedClient) {
		return err
	}
	nc, err := connector.DialNATS(cfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	return f(ctx, client.New(nc, cfg.SubjectPrefix), args, stdout)
}

// errNeedClient ends the first, checking pass of a command: the call is well formed.
var errNeedClient = errors.New("need a client")

var cliUsage = map[string]string{
	"apply":  "usage: mailbus apply -f FILE [--dry-run] [--prune] [-o text|json]",
	"get":    "usage: mailbus get connections|routes [NAME] [-o table|json|yaml]",
	"status": "usage: mailbus status [ROUTE] [-o table|json]",
	"test":   "usage: mailbus test CONNECTION [-o text|json]",
	"log":    "usage: mailbus log CONNECTION [--since TIME|DURATION] [-o FILE]",
	"delete": "usage: mailbus delete connection|route NAME",
}

// parseArgs parses flags wherever they stand among the arguments and returns the others.
// Errors are usage errors.
func parseArgs(fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{fmt.Errorf("%v\n%s", err, cliUsage[fs.Name()])}
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) < min || len(pos) > max {
		return nil, usageError{errors.New(cliUsage[fs.Name()])}
	}
	return pos, nil
}

// oneOf refuses a flag value outside allowed, as a usage error.
func oneOf(flagName, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return usageError{fmt.Errorf("-%s %q: want %s", flagName, v, strings.Join(allowed, ", "))}
}

func cmdApply(ctx context.Context, c *client.Client, args []string, w io.Writer) error {
	fs := flag.NewFlagSet("apply", flag.ContinueOnError)
	file := fs.String("f", "", "definitions file (YAML or JSON); - for standard input")
	dry := fs.Bool("dry-run", false, "print what would change, change nothing")
	prune := fs.Bool("prune", false, "delete the connections and routes the file leaves out")
	out := fs.String("o", "text", "output: text or json")
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	if *file == "" {
		return usageError{errors.New("apply: -f FILE is required\n" + cliUsage["apply"])}
	}
	if err := oneOf("o", *out, "text", "json"); err != nil {
		return err
	}
	// The file is read and checked whole before anything is sent.
	var data []byte
	var err error
	if *file == "-" && c == nil {
		return errNeedClient // standard input is read once, in the pass with a client
	}
	if *file == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(*file)
	}
	if err != nil {
		return err
	}
	defs, err := store.ParseDefinitions(*file, data, os.LookupEnv)
	if err != nil {
		return err
	}
	if c == nil {
		return errNeedClient
	}
	changes, err := c.Apply(ctx, defs, client.ApplyOptions{DryRun: *dry, Prune: *prune})
	var de *store.DefinitionError
	if errors.As(err, &de) {
		de.File = *file
	}
	if err != nil {
		return err
	}
	if *out == "json" {
		if changes == nil {
			changes = []schemas.Change{}
		}
		return writeJSON(w, map[string]any{"dryRun": *dry, "changes": changes})
	}
	done := map[string]string{
		schemas.ActionCreate: "created", schemas.ActionUpdate: "updated",
		schemas.ActionUnchanged: "unchanged", schemas.ActionDelete: "deleted",
	}
	counts := map[string]int{}
	for _, ch := range changes {
		counts[ch.Action]++
		line := ch.Kind + "/" + ch.Name + " " + done[ch.Action]
		if len(ch.Fields) > 0 {
			line += " (" + strings.Join(ch.Fields, ", ") + ")"
		}
		if *dry && ch.Action != schemas.ActionUnchanged {
			line += " (dry run)"
		}
		fmt.Fprintln(w, line)
	}
	summary := fmt.Sprintf("%d created, %d updated, %d unchanged, %d deleted",
		counts[schemas.ActionCreate], counts[schemas.ActionUpdate], counts[schemas.ActionUnchanged], counts[schemas.ActionDelete])
	if *dry {
		summary += "; dry run: nothing was changed"
	}
	fmt.Fprintln(w, summary)
	return nil
}

func cmdGet(ctx context.Context, c *client.Client, args []string, w io.Writer) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	out := fs.String("o", "table", "output: table, json or yaml")
	pos, err := parseArgs(fs, args, 1, 2)
	if err != nil {
		return err
	}
	if err := oneOf("o", *out, "table", "json", "yaml"); err != nil {
		return err
	}
	kind := strings.TrimSuffix(pos[0], "s")
	if kind != "connection" && kind != "route" {
		return usageError{fmt.Errorf("get %q: want connections or routes\n%s", pos[0], cliUsage["get"])}
	}
	if c == nil {
		return errNeedClient
	}
	var defs store.Definitions
	var one any
	switch {
	case kind == "connection" && len(pos) == 2:
		d, err := c.Connection(ctx, pos[1])
		if err != nil {
			return err
		}
		defs.Connections, one = []schemas.Connection{*d}, d
	case kind == "connection":
		if defs.Connections, err = c.Connections(ctx); err != nil {
			return err
		}
		one = defs.Connections
	case len(pos) == 2:
		d, err := c.Route(ctx, pos[1])
		if err != nil {
			return err
		}
		defs.Routes, one = []schemas.Route{*d}, d
	default:
		if defs.Routes, err = c.Routes(ctx); err != nil {
			return err
		}
		one = defs.Routes
	}
	switch *out {
	case "json":
		if one == nil || (kind == "connection" && defs.Connections == nil && len(pos) == 1) {
			one = []any{}
		}
		if kind == "route" && defs.Routes == nil && len(pos) == 1 {
			one = []any{}
		}
		return writeJSON(w, one)
	case "yaml":
		return writeDefinitionsYAML(w, &defs)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if kind == "connection" {
		fmt.Fprintln(tw, "NAME\tTYPE\tSERVER\tENCRYPTION\tAUTH\tUSERNAME\tDISABLED")
		for _, d := range defs.Connections {
			server := fmt.Sprintf("%s:%d", d.Host, d.Port)
			if d.Type == schemas.TypeExchange {
				server = d.ExchangeURL
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, d.Type, server, d.Encryption, d.Auth, dash(d.Username), yesNo(d.Disabled))
		}
	} else {
		fmt.Fprintln(tw, "NAME\tCONNECTION\tMAILBOX\tBUS\tSELECT\tAFTER\tDISABLED")
		for _, d := range defs.Routes {
			after := d.After
			if d.MoveTo != "" {
				after += " " + d.MoveTo
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", d.Name, d.Connection, d.Mailbox, d.Bus, d.Select, after, yesNo(d.Disabled))
		}
	}
	return tw.Flush()
}

// writeDefinitionsYAML writes defs as a file mailbus apply reads: what the store adds
// (revisions, the flags of stored secrets) left out.
func writeDefinitionsYAML(w io.Writer, defs *store.Definitions) error {
	b, err := json.Marshal(defs)
	if err != nil {
		return err
	}
	var doc map[string][]map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		return err
	}
	for _, list := range doc {
		for _, d := range list {
			delete(d, "revision")
			delete(d, "passwordSet")
			if o, ok := d["oauth2"].(map[string]any); ok {
				for _, k := range []string{"accessTokenSet", "clientSecretSet", "refreshTokenSet"} {
					delete(o, k)
				}
			}
		}
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return enc.Close()
}

func cmdStatus(ctx context.Context, c *client.Client, args []string, w io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	out := fs.String("o", "table", "output: table or json")
	pos, err := parseArgs(fs, args, 0, 1)
	if err != nil {
		return err
	}
	if err := oneOf("o", *out, "table", "json"); err != nil {
		return err
	}
	if c == nil {
		return errNeedClient
	}
	var all []schemas.RouteStatus
	if len(pos) == 1 {
		st, err := c.Status(ctx, pos[0])
		if err != nil {
			return err
		}
		if *out == "json" {
			return writeJSON(w, st)
		}
		all = []schemas.RouteStatus{*st}
	} else if all, err = c.Statuses(ctx); err != nil {
		return err
	}
	if *out == "json" {
		if all == nil {
			all = []schemas.RouteStatus{}
		}
		return writeJSON(w, all)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTE\tSTATE\tOWNER\tPUBLISHED\tDEAD LETTERS\tLAST ERROR\tLAST SUCCESS")
	for _, s := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", s.Route, s.State, dash(s.Owner), s.Published, s.DeadLettered,
			dash(oneLine(s.LastError)), timeOrDash(s.LastSuccessAt))
	}
	return tw.Flush()
}

func cmdTest(ctx context.Context, c *client.Client, args []string, w io.Writer) error {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	out := fs.String("o", "text", "output: text or json")
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if err := oneOf("o", *out, "text", "json"); err != nil {
		return err
	}
	if c == nil {
		return errNeedClient
	}
	r, err := c.Test(ctx, pos[0])
	if err != nil {
		return err
	}
	failed := fmt.Errorf("connection %s: check failed", pos[0])
	if *out == "json" {
		if err := writeJSON(w, r); err != nil {
			return err
		}
		if !r.OK {
			return failed
		}
		return nil
	}
	verdict := "check passed"
	if !r.OK {
		verdict = "check failed"
		if r.Error != nil {
			verdict += ": " + r.Error.Error()
		}
	}
	fmt.Fprintf(w, "connection %s: %s\n", pos[0], verdict)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tRESULT\tTIME\tDETAIL")
	for _, s := range r.Stages {
		result, detail := "ok", s.Detail
		if !s.OK {
			result, detail = "FAILED", s.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%dms\t%s\n", s.Stage, result, s.MS, dash(oneLine(detail)))
	}
	tw.Flush()
	if len(r.Capabilities) > 0 {
		fmt.Fprintf(w, "capabilities: %s\n", strings.Join(r.Capabilities, " "))
	}
	if m := r.Mailbox; m != nil {
		fmt.Fprintf(w, "mailbox %s: %d messages, %d unseen, uidvalidity %d, uidnext %d\n", m.Name, m.Messages, m.Unseen, m.UidValidity, m.UidNext)
	}
	if !r.OK {
		return failed
	}
	return nil
}

func cmdLog(ctx context.Context, c *client.Client, args []string, w io.Writer) error {
	fs := flag.NewFlagSet("log", flag.ContinueOnError)
	sinceText := fs.String("since", "", "entries since this time (RFC 3339) or this long ago (1h30m)")
	file := fs.String("o", "", "write the log to this file instead of standard output")
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	var since *time.Time
	if *sinceText != "" {
		t, err := time.Parse(time.RFC3339, *sinceText)
		if err != nil {
			d, derr := time.ParseDuration(*sinceText)
			if derr != nil || d <= 0 {
				return usageError{fmt.Errorf("--since %q: want a time such as 2026-11-25T19:00:00Z or a duration such as 2h", *sinceText)}
			}
			t = time.Now().Add(-d)
		}
		since = &t
	}
	if c == nil {
		return errNeedClient
	}
	text, err := c.Log(ctx, pos[0], since)
	if err != nil {
		return err
	}
	if *file == "" {
		_, err = io.WriteString(w, text)
		return err
	}
	if err := os.WriteFile(*file, []byte(text), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d log lines of connection %s written to %s\n", strings.Count(text, "\n"), pos[0], *file)
	return nil
}

func cmdDelete(ctx context.Context, c *client.Client, args []string, w io.Writer) error {
	fs := flag.NewFlagSet("delete", flag.ContinueOnError)
	pos, err := parseArgs(fs, args, 2, 2)
	if err != nil {
		return err
	}
	kind := pos[0]
	if kind != "connection" && kind != "route" {
		return usageError{fmt.Errorf("delete %q: want connection or route\n%s", kind, cliUsage["delete"])}
	}
	if c == nil {
		return errNeedClient
	}
	if kind == "connection" {
		err = c.DeleteConnection(ctx, pos[1])
	} else {
		err = c.DeleteRoute(ctx, pos[1])
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s/%s deleted\n", kind, pos[1])
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func timeOrDash(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// oneLine keeps a table row on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
