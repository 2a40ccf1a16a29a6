// Package configs is part of specd; see docs/architecture.md.
package configs
