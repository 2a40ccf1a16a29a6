// Package engine is part of specd; see docs/architecture.md.
package engine
