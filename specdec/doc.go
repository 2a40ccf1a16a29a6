// Package specdec is part of specd; see docs/architecture.md.
package specdec
