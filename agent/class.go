package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ClassOptions configure an agent class at registration.
type ClassOptions struct {
	// Callable lists the methods WebSocket clients may call, by Go name
	// ("Increment") or by the name the JavaScript client uses
	// ("increment"). Go code (workflow steps, other agents, schedules) may
	// call any exported method; clients only these.
	Callable []string
}

// class is a registered agent class.
type class struct {
	name    string
	kebab   string
	typ     reflect.Type // the struct type T; instances are *T
	newInst func() Base
	methods map[string]*method // by Go name and by wire name
}

// Base is implemented by *T for every class type T that embeds Agent[S]
// (directly or through another base such as think.Agent): its methods are
// unexported and come from the embedded Agent[S]. It is the constraint on
// Register's type parameter, exported so that packages building bases on
// Agent can register their classes.
type Base interface {
	bind(in *instance, self any)
	base() *instance
	loadState(raw []byte) error
	stateJSON() ([]byte, error)
	setStateJSON(ctxWithConn context.Context, raw []byte) error
	mergeStateJSON(ctx context.Context, patch []byte) error
	resetState(ctx context.Context) error
}

// Register registers the agent class T under name. T must be a struct type
// embedding Agent[S] for some state type S:
//
//	type Counter struct{ agent.Agent[CounterState] }
//	agent.MustRegister[Counter](rt, "Counter", agent.ClassOptions{Callable: []string{"increment"}})
//
// The runtime makes each instance with new(T) and then calls the init
// functions on it, which is where a class gets its dependencies:
//
//	agent.Register[Mailer](rt, "Mailer", agent.ClassOptions{}, func(m *Mailer) { m.smtp = client })
func Register[T any, PT interface {
	*T
	Base
}](rt *Runtime, name string, opts ClassOptions, init ...func(*T)) error {
	if name == "" {
		return fmt.Errorf("agent: register: class name is empty")
	}
	typ := reflect.TypeFor[T]()
	c := &class{
		name:  name,
		kebab: Kebab(name),
		typ:   typ,
		newInst: func() Base {
			t := new(T)
			for _, f := range init {
				f(t)
			}
			return PT(t)
		},
		methods: methodsOf(reflect.PointerTo(typ)),
	}
	for _, n := range opts.Callable {
		m := c.methods[n]
		if m == nil {
			return fmt.Errorf("agent: register %s: callable method %q: no exported method of that name with a supported signature (see package doc)", name, n)
		}
		m.callable = true
	}
	return rt.register(c)
}

// MustRegister is Register that panics on error, for program setup.
func MustRegister[T any, PT interface {
	*T
	Base
}](rt *Runtime, name string, opts ClassOptions, init ...func(*T)) {
	if err := Register[T, PT](rt, name, opts, init...); err != nil {
		panic(err)
	}
}

// Kebab is the URL form of a class name, derived as the JavaScript client
// derives it: "MyAgent" → "my-agent", "EMAIL_AGENT" → "email-agent",
// "HTTPServer" → "h-t-t-p-server".
func Kebab(name string) string {
	if strings.ToUpper(name) == name && strings.ToLower(name) != name {
		return strings.ReplaceAll(strings.ToLower(name), "_", "-")
	}
	var b strings.Builder
	for _, r := range name {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('-')
			b.WriteRune(r + ('a' - 'A'))
			continue
		}
		b.WriteRune(r)
	}
	s := strings.TrimPrefix(b.String(), "-")
	return strings.TrimSuffix(strings.ReplaceAll(s, "_", "-"), "-")
}

// wireName is a Go method name as JavaScript callers write it.
func wireName(goName string) string {
	r, n := utf8.DecodeRuneInString(goName)
	return string(unicode.ToLower(r)) + goName[n:]
}

// method is one exported method of an agent class that can be called by
// name with JSON arguments.
type method struct {
	name     string // Go name
	wire     string
	fn       reflect.Value // the method as a function of the receiver first
	ctx      bool          // takes a context.Context first
	stream   bool          // takes a *Stream after the context
	params   []reflect.Type
	result   reflect.Type // nil when it returns no value
	errOut   bool         // returns an error last
	callable bool
}

var (
	ctxType    = reflect.TypeFor[context.Context]()
	errType    = reflect.TypeFor[error]()
	streamType = reflect.TypeFor[*Stream]()
)

// reserved are the names of methods the runtime calls as hooks, and of the
// base's own methods; none of them is callable by name.
var reserved = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range []string{"OnStart", "OnRequest", "OnConnect", "OnMessage", "OnClose",
		"OnError", "ValidateState", "OnStateChanged", "OnFiberRecovered", "InitialState", "OnActivate",
		"OnWorkflowProgress", "OnWorkflowComplete", "OnWorkflowError", "OnWorkflowEvent"} {
		m[n] = true
	}
	t := reflect.TypeFor[*Agent[struct{}]]()
	for i := range t.NumMethod() {
		m[t.Method(i).Name] = true
	}
	return m
}()

// methodsOf finds the methods of pt that may be called by name: exported,
// not a hook or a base method, with the signature
//
//	func (a *T) M([ctx context.Context,] [s *Stream,] args...) ([R,] [error])
//
// where each argument and R can be encoded as JSON.
func methodsOf(pt reflect.Type) map[string]*method {
	out := map[string]*method{}
	for i := range pt.NumMethod() {
		rm := pt.Method(i)
		if reserved[rm.Name] {
			continue
		}
		m, ok := analyze(rm)
		if !ok {
			continue
		}
		out[m.name] = m
		if _, taken := out[m.wire]; !taken {
			out[m.wire] = m
		}
	}
	return out
}

func analyze(rm reflect.Method) (*method, bool) {
	ft := rm.Type
	m := &method{name: rm.Name, wire: wireName(rm.Name), fn: rm.Func}
	in := 1 // skip the receiver
	if in < ft.NumIn() && ft.In(in) == ctxType {
		m.ctx = true
		in++
	}
	if in < ft.NumIn() && ft.In(in) == streamType {
		m.stream = true
		in++
	}
	for ; in < ft.NumIn(); in++ {
		if !jsonable(ft.In(in)) {
			return nil, false
		}
		m.params = append(m.params, ft.In(in))
	}
	if ft.IsVariadic() {
		return nil, false
	}
	switch ft.NumOut() {
	case 0:
	case 1:
		if ft.Out(0) == errType {
			m.errOut = true
		} else if jsonable(ft.Out(0)) {
			m.result = ft.Out(0)
		} else {
			return nil, false
		}
	case 2:
		if ft.Out(1) != errType || !jsonable(ft.Out(0)) {
			return nil, false
		}
		m.result, m.errOut = ft.Out(0), true
	default:
		return nil, false
	}
	return m, true
}

func jsonable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Chan, reflect.Func, reflect.UnsafePointer, reflect.Complex64, reflect.Complex128:
		return false
	case reflect.Interface:
		return t.NumMethod() == 0 || t.Implements(reflect.TypeFor[json.Marshaler]())
	}
	return true
}

// signature describes the method's JSON arguments, for error messages.
func (m *method) signature() string {
	parts := make([]string, len(m.params))
	for i, p := range m.params {
		parts[i] = p.String()
	}
	return m.wire + "(" + strings.Join(parts, ", ") + ")"
}

func (m *method) badArgs(class, format string, args ...any) error {
	return &MethodError{Class: class, Method: m.wire, Err: ErrBadArguments,
		Detail: fmt.Sprintf(format, args...) + "; expected " + m.signature()}
}

// decodeArgs decodes a JSON argument list into the method's parameters.
func (m *method) decodeArgs(class string, raw []json.RawMessage) ([]reflect.Value, error) {
	if len(raw) != len(m.params) {
		return nil, m.badArgs(class, "got %d argument(s), want %d", len(raw), len(m.params))
	}
	vals := make([]reflect.Value, len(raw))
	for i, r := range raw {
		v := reflect.New(m.params[i])
		if err := json.Unmarshal(r, v.Interface()); err != nil {
			return nil, m.badArgs(class, "argument %d: %v", i+1, err)
		}
		vals[i] = v.Elem()
	}
	return vals, nil
}

// convertArgs fits Go values to the method's parameters: values of the
// parameter's type pass as they are, json.RawMessage is decoded, and
// anything else goes through JSON, so that the check is the same as for a
// client's call.
func (m *method) convertArgs(class string, args []any) ([]reflect.Value, error) {
	if len(args) != len(m.params) {
		return nil, m.badArgs(class, "got %d argument(s), want %d", len(args), len(m.params))
	}
	vals := make([]reflect.Value, len(args))
	for i, a := range args {
		p := m.params[i]
		if a != nil && reflect.TypeOf(a).AssignableTo(p) {
			vals[i] = reflect.ValueOf(a)
			continue
		}
		raw, ok := a.(json.RawMessage)
		if !ok {
			var err error
			if raw, err = json.Marshal(a); err != nil {
				return nil, m.badArgs(class, "argument %d: %v", i+1, err)
			}
		}
		v := reflect.New(p)
		if err := json.Unmarshal(raw, v.Interface()); err != nil {
			return nil, m.badArgs(class, "argument %d: %v", i+1, err)
		}
		vals[i] = v.Elem()
	}
	return vals, nil
}

// invoke calls the method on self. The caller holds the instance's lock.
func (m *method) invoke(ctx context.Context, self any, s *Stream, args []reflect.Value) (any, error) {
	in := make([]reflect.Value, 0, 3+len(args))
	in = append(in, reflect.ValueOf(self))
	if m.ctx {
		in = append(in, reflect.ValueOf(ctx))
	}
	if m.stream {
		in = append(in, reflect.ValueOf(s))
	}
	in = append(in, args...)
	out := m.fn.Call(in)
	var (
		res any
		err error
	)
	if m.result != nil {
		res = out[0].Interface()
	}
	if m.errOut {
		if e := out[len(out)-1]; !e.IsNil() {
			err = e.Interface().(error)
		}
	}
	return res, err
}
