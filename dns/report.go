package dns

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the report as one indented JSON object.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report as a table for people: one row per check,
// the detail of every check that is not ok on the line below it, and a
// summary line.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tCHECK\tSTATUS\tEXPECTED\tFOUND")
	counts := map[Status]int{}
	for _, x := range r.Results {
		counts[x.Status]++
		st := string(x.Status)
		if x.Status != StatusOK && !x.Required {
			st += " (recommended)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", x.Domain, x.Check, st, cell(x.Expected), cell(x.Found))
		if x.Detail != "" && x.Status != StatusOK {
			fmt.Fprintf(tw, "\t\t\t  ↳ %s\t\n", cell(x.Detail))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verdict := "every required check passes"
	if !r.OK {
		verdict = "some required checks FAIL"
	}
	_, err := fmt.Fprintf(w, "%d checks through %s: %d ok, %d warn, %d fail: %s\n",
		len(r.Results), r.Resolver, counts[StatusOK], counts[StatusWarn], counts[StatusFail], verdict)
	return err
}

// cell keeps a table cell on one line.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.NewReplacer("\t", " ", "\n", " ").Replace(s)
}
