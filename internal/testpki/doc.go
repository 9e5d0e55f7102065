// Package testpki writes a throwaway certificate authority and certificates for tests of
// TLS (NATS, the HTTPS gateway, the services' mutual TLS). Only tests import it; it
// imports nothing from the module.
package testpki
