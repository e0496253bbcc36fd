//go:build race

package connector_test

// raceEnabled tells tests that the race detector is on (it limits live goroutines).
const raceEnabled = true
