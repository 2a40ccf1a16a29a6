// Package server is part of specd; see docs/architecture.md.
package server
