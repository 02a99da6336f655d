package triage

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"

	"agentflow/model"
	"agentflow/model/scripted"
	"agentflow/think"
)

// Issue is an issue as the get_issue tool reads it.
type Issue struct {
	Number int    `json:"number"`
	Title  string `json:"title"`
	Body   string `json:"body"`
	Author string `json:"author"`
}

// IssueArgs are get_issue's arguments.
type IssueArgs struct {
	Number int `json:"number" jsonschema:"the issue number"`
}

// issues is the example's small, fixed issue tracker.
var issues = map[int]Issue{
	42: {Number: 42, Author: "ada", Title: "App crashes when saving a file with an emoji in its name",
		Body: "Saving notes/🎉.md quits the app at once; the log shows a panic in the path encoder. Files without emoji save fine."},
	7: {Number: 7, Author: "grace", Title: "Document the --once flag",
		Body: "The README does not say what `agentflow dev --once` does."},
}

// LookupIssue returns an issue of the example's tracker; an unknown number
// is an issue with no details.
func LookupIssue(n int) Issue {
	if is, ok := issues[n]; ok {
		return is
	}
	return Issue{Number: n, Title: fmt.Sprintf("Issue #%d", n), Body: "(no details)", Author: "unknown"}
}

// IssueTool is the get_issue tool: it reads an issue of the example's
// tracker.
func IssueTool() (think.Tool, error) {
	return think.NewTool("get_issue", "Read a GitHub issue: its title, body and author",
		func(ctx context.Context, a IssueArgs) (Issue, error) {
			if a.Number <= 0 {
				return Issue{}, fmt.Errorf("get_issue: %d is not an issue number", a.Number)
			}
			return LookupIssue(a.Number), nil
		})
}

// Scripted returns the scripted model TriageAgent uses when no provider is
// configured (it is not a model: it plays a fixed script). To "Triage
// issue #N" it calls get_issue, and to the tool's result it answers
// through the final-answer tool with a draft made from the issue.
func Scripted() *scripted.Model {
	return scripted.New(scripted.Turn{Respond: scriptedTurn})
}

var issueRef = regexp.MustCompile(`#(\d+)`)

func scriptedTurn(req model.Request) scripted.Turn {
	if len(req.Messages) == 0 {
		return scripted.Say("(scripted model) Nothing to triage.")
	}
	last := req.Messages[len(req.Messages)-1]
	if last.Role != model.RoleTool {
		n := 0
		if m := issueRef.FindStringSubmatch(last.Content); m != nil {
			n, _ = strconv.Atoi(m[1])
		}
		args, _ := json.Marshal(IssueArgs{Number: n})
		t := scripted.Call("get_issue", string(args))
		t.Calls[0].ID = fmt.Sprintf("call_%d", len(req.Messages))
		return t
	}
	var is Issue
	if last.IsError || json.Unmarshal([]byte(last.Content), &is) != nil {
		is = Issue{Title: "Unreadable issue", Body: last.Content}
	}
	d := Draft{Title: is.Title, Summary: "(scripted) " + is.Body, Labels: labelsFor(is)}
	args, _ := json.Marshal(d)
	// The final-answer tool of the turn is the last one offered.
	final := think.FinalAnswerTool
	if len(req.Tools) > 0 {
		final = req.Tools[len(req.Tools)-1].Name
	}
	t := scripted.Call(final, string(args))
	t.Calls[0].ID = fmt.Sprintf("call_%d", len(req.Messages))
	return t
}

// labelsFor picks labels by keyword, as a scripted stand-in for judgment.
func labelsFor(is Issue) []string {
	text := is.Title + " " + is.Body
	var labels []string
	for _, k := range []struct{ re, label string }{
		{`(?i)crash|panic|quits`, "bug"},
		{`(?i)crash|panic`, "crash"},
		{`(?i)readme|document`, "docs"},
	} {
		if regexp.MustCompile(k.re).MatchString(text) {
			labels = append(labels, k.label)
		}
	}
	if len(labels) == 0 {
		labels = []string{"needs-info"}
	}
	return labels
}
