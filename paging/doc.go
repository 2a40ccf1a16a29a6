// Package paging is part of specd; see docs/architecture.md.
package paging
