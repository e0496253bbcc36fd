package connector_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailbus/mailbus/connector/dovecottest"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/schemas"
)

// filterBenchTotal messages of about 4 KB, 1 in filterBenchEvery of them an invoice.
const filterBenchTotal, filterBenchEvery = 20000, 100

// BenchmarkIMAPFilter takes a mailbox of 20,000 messages of about 4 KB, 1 % of them
// invoices, with a route whose filter takes the invoices (subject) and with one that has
// no filter: the time of one route's whole first cycle (search, fetch, map, publish, ack,
// \Seen, checkpoint), against the in-memory IMAP server and embedded NATS. bodies/op is
// how many whole messages the server was asked for: the filtered route fetches only the
// 200 invoices. Run: go test -run '^$' -bench BenchmarkIMAPFilter -benchtime 1x ./connector/
func BenchmarkIMAPFilter(b *testing.B) {
	benchFilter(b, func(b *testing.B) *filterServer { return memFilterServer(b, false) })
}

// BenchmarkIMAPFilterDovecot is the same against Dovecot over IMAPS
// (MAILBUS_TEST_DOVECOT=1), its index built by a SELECT before the clock starts.
func BenchmarkIMAPFilterDovecot(b *testing.B) {
	benchFilter(b, func(b *testing.B) *filterServer {
		srv := dovecottest.Start(b, nil)
		fs := &filterServer{
			conn: imapConn(srv.TLSAddr, schemas.EncryptionSSL), dial: dovecotTLS(srv), rootCAs: srv,
			deliver: func(t testing.TB, raw []byte) { srv.Deliver(t, "alice", raw) },
		}
		fs.warm = func() {
			c, err := fs.dial()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if err := c.Login("alice", "secret").Wait(); err != nil {
				b.Fatalf("Login().Wait() = %v", err)
			}
			if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
				b.Fatalf("Select().Wait() = %v", err)
			}
		}
		return fs
	})
}

func benchFilter(b *testing.B, server func(b *testing.B) *filterServer) {
	pad := strings.Repeat("line of body text for padding\r\n", 130)
	for _, tc := range []struct {
		name   string
		filter *schemas.RouteFilter
		want   int
	}{
		{"filtered", &schemas.RouteFilter{Subject: "invoice"}, filterBenchTotal / filterBenchEvery},
		{"unfiltered", nil, filterBenchTotal},
	} {
		b.Run(tc.name, func(b *testing.B) {
			bodies, recorded := 0, false
			for range b.N {
				b.StopTimer()
				srv := server(b)
				for i := 1; i <= filterBenchTotal; i++ {
					subject := fmt.Sprintf("Re: question %d", i)
					if i%filterBenchEvery == 0 {
						subject = fmt.Sprintf("Invoice %d", i)
					}
					srv.deliver(b, []byte(fmt.Sprintf("From: Sender <sender@example.org>\r\nTo: bot@example.com\r\n"+
						"Subject: %s\r\nMessage-ID: <m%d@example.org>\r\n\r\n%s", subject, i, pad)))
				}
				if srv.warm != nil {
					srv.warm()
				}
				n := startBusNATS(b)
				rt := newIMAPRuntime(b, n)
				if srv.rootCAs != nil {
					rt.TLSRootCAs = srv.rootCAs.CA
				}
				route := imapRoute("bench_"+tc.name, schemas.SelectUnseen, schemas.AfterMarkRead)
				route.Filter = tc.filter
				b.StartTimer()
				stop := runIMAPWorker(b, rt, engine.RouteSpec{Route: route, Connection: srv.conn})
				deadline := time.Now().Add(10 * time.Minute)
				for {
					st, _ := rt.Status.Get(route.Name)
					if st.State == schemas.StateIdle && st.LastUid >= filterBenchTotal {
						if int(st.Published) != tc.want {
							b.Fatalf("published %d, want %d", st.Published, tc.want)
						}
						break
					}
					if time.Now().After(deadline) {
						b.Fatalf("not done: %+v", st)
					}
					time.Sleep(2 * time.Millisecond)
				}
				b.StopTimer()
				stop()
				if srv.bodies != nil {
					bodies, recorded = bodies+len(srv.bodies()), true
				}
			}
			if recorded {
				b.ReportMetric(float64(bodies)/float64(b.N), "bodies/op")
			}
		})
	}
}
