package connector_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/schemas"
)

// BenchmarkIMAPFilter takes a mailbox of 20,000 messages of about 4 KB, 1 % of them
// invoices, with a route whose filter takes the invoices (subject) and with one that has
// no filter: the time of one route's whole first cycle (search, fetch, map, publish, ack,
// \Seen, checkpoint), against the in-memory IMAP server and embedded NATS. bodies/op is
// how many whole messages the server was asked for: the filtered route fetches only the
// 200 invoices. Run: go test -run '^$' -bench BenchmarkIMAPFilter -benchtime 1x ./connector/
func BenchmarkIMAPFilter(b *testing.B) {
	const total, every = 20000, 100 // 1 % match
	pad := strings.Repeat("line of body text for padding\r\n", 130)
	for _, tc := range []struct {
		name   string
		filter *schemas.RouteFilter
		want   int
	}{
		{"filtered", &schemas.RouteFilter{Subject: "invoice"}, total / every},
		{"unfiltered", nil, total},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var bodies int
			for range b.N {
				b.StopTimer()
				srv := memFilterServer(b, false)
				for i := 1; i <= total; i++ {
					subject := fmt.Sprintf("Re: question %d", i)
					if i%every == 0 {
						subject = fmt.Sprintf("Invoice %d", i)
					}
					srv.deliver(b, []byte(fmt.Sprintf("From: Sender <sender@example.org>\r\nTo: bot@example.com\r\n"+
						"Subject: %s\r\nMessage-ID: <m%d@example.org>\r\n\r\n%s", subject, i, pad)))
				}
				n := startBusNATS(b)
				rt := newIMAPRuntime(b, n)
				route := imapRoute("bench_"+tc.name, schemas.SelectUnseen, schemas.AfterMarkRead)
				route.Filter = tc.filter
				b.StartTimer()
				stop := runIMAPWorker(b, rt, connector.RouteSpec{Route: route, Connection: srv.conn})
				deadline := time.Now().Add(10 * time.Minute)
				for {
					st, _ := rt.Status.Get(route.Name)
					if st.State == schemas.StateIdle && st.LastUid >= total {
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
				bodies += len(srv.bodies())
			}
			b.ReportMetric(float64(bodies)/float64(b.N), "bodies/op")
		})
	}
}
