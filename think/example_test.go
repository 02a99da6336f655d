package think_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"agentflow/agent"
	"agentflow/model"
	"agentflow/model/scripted"
	"agentflow/store/sqlite"
	"agentflow/think"
	"agentflow/workflow"
)

// State is an Assistant's state.
type State struct {
	Zone string `json:"zone,omitempty"` // the user's time zone
}

// Assistant is a Think class; think.Agent embeds agent.Agent: state,
// schedules, fibers and workflows as for any agent.
type Assistant struct{ think.Agent[State] }

// TimeArgs are get_time's arguments; the tag is the description the model
// sees.
type TimeArgs struct {
	Zone string `json:"zone" jsonschema:"an IANA time zone such as Europe/London"`
}

// TimeResult is get_time's result, sent to the model as JSON.
type TimeResult struct {
	Zone string `json:"zone"`
	Time string `json:"time"`
}

// now is get_time's clock, fixed so that the example prints the same every
// time.
func now() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }

// A Think agent answering a submission with one tool round, on the scripted
// model: a Provider that plays turns written in advance.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "agentflow-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(ctx, filepath.Join(dir, "app.db"), sqlite.Options{})
	if err != nil {
		panic(err)
	}
	defer st.Close()
	eng, err := workflow.NewEngine(workflow.Options{Store: st})
	if err != nil {
		panic(err)
	}
	rt, err := agent.NewRuntime(agent.Options{Engine: eng})
	if err != nil {
		panic(err)
	}

	// A tool is a Go function; its argument schema comes from the
	// argument's type.
	getTime, err := think.NewTool("get_time", "The current date and time in an IANA time zone",
		func(ctx context.Context, a TimeArgs) (TimeResult, error) {
			loc, err := time.LoadLocation(a.Zone)
			if err != nil {
				return TimeResult{}, err // sent to the model as an error result
			}
			return TimeResult{Zone: a.Zone, Time: now().In(loc).Format(time.Kitchen)}, nil
		})
	if err != nil {
		panic(err)
	}
	provider := scripted.New( // in production: a model.Provider such as openai.New(…)
		scripted.Call("get_time", `{"zone":"Asia/Tokyo"}`), // the first model call calls the tool
		scripted.Say("It is 9:00PM in Tokyo."),             // the second answers
	)
	think.MustRegister[Assistant](rt, "Assistant", think.Options{
		Model: provider, System: "You are a concise assistant.", Tools: []think.Tool{getTime},
		MaxSteps: 10, // model calls per turn, the default
		Class:    agent.ClassOptions{Callable: []string{"submitMessages", "inspectSubmission"}},
	})
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	defer eng.Stop(ctx)
	if err := rt.Start(ctx); err != nil {
		panic(err)
	}
	defer rt.Stop(ctx)

	// SubmitMessages returns at once; the turn runs in the background.
	res, err := agent.With(ctx, rt, "ada", func(ctx context.Context, a *Assistant) (think.SubmitResult, error) {
		return a.SubmitMessages(ctx, []model.Message{{Role: model.RoleUser, Content: "Time in Tokyo?"}},
			think.SubmitOptions{IdempotencyKey: "msg-123"})
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("submitted:", res.Submission.Status)

	var sub think.SubmissionInfo
	for !sub.Status.Finished() {
		time.Sleep(10 * time.Millisecond)
		sub, err = agent.With(ctx, rt, "ada", func(ctx context.Context, a *Assistant) (think.SubmissionInfo, error) {
			return a.InspectSubmission(ctx, res.Submission.ID)
		})
		if err != nil {
			panic(err)
		}
	}
	fmt.Println(sub.Status, string(sub.Output))

	conv, err := agent.With(ctx, rt, "ada", func(ctx context.Context, a *Assistant) ([]model.Message, error) {
		return a.Conversation(ctx)
	})
	if err != nil {
		panic(err)
	}
	for _, m := range conv {
		for _, c := range m.ToolCalls {
			fmt.Printf("%s: calls %s %s\n", m.Role, c.Name, c.Arguments)
		}
		if m.Content != "" {
			fmt.Printf("%s: %s\n", m.Role, m.Content)
		}
	}
	// Output:
	// submitted: pending
	// completed {"finish":"answered","text":"It is 9:00PM in Tokyo."}
	// user: Time in Tokyo?
	// assistant: calls get_time {"zone":"Asia/Tokyo"}
	// tool: {"zone":"Asia/Tokyo","time":"9:00PM"}
	// assistant: It is 9:00PM in Tokyo.
}
