// Package deploy holds how to run mailbus: a docker-compose file, Kubernetes manifests for
// the sidecar pattern and a NATS server configuration with accounts and permissions. It has
// no code; its tests parse every file and check the container build.
package deploy
