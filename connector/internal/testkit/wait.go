package testkit

import "time"

// WaitFor polls cond every 20ms until it holds or within passed, and reports whether it
// held; the caller says what failed. Time limits here bound waiting, never speed.
func WaitFor(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
