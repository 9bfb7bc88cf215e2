// Package suggest finds the likely intended word for a misspelt one, for
// "did you mean" in error messages.
package suggest

import "strings"

// Closest returns the candidate closest to s, or "" when none is close
// enough to be a likely typo. A candidate equal to s but for case wins.
func Closest(s string, candidates []string) string {
	best, bestDist := "", -1
	for _, c := range candidates {
		if strings.EqualFold(s, c) {
			return c
		}
		d := editDistance(strings.ToLower(s), strings.ToLower(c))
		if bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	if bestDist < 0 || bestDist > 1+len(s)/4 || bestDist >= len(s) {
		return ""
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b,
// counted in bytes: insertions, deletions, substitutions and transpositions
// of neighbours ("TREM" and "TERM" are 1 apart) each cost one.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
