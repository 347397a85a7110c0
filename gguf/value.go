package gguf

import (
	"fmt"
	"math"
)

// ValueType is the type tag of a metadata value as GGUF stores it.
type ValueType uint32

// The metadata value types of GGUF v2 and v3.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"}

func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// size is the encoded size of a scalar of type t, 0 for strings and arrays.
func (t ValueType) size() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// A KV is one metadata entry.
type KV struct {
	Key   string
	Value Value
}

// Value is a metadata value: a scalar, a string, or an array of either.
//
// Scalars are held as the Go type of the same name (uint8 … float64, bool,
// string). Arrays are held as a slice of that type ([]uint32, []string, …);
// an array of arrays is a []Value.
type Value struct {
	Type ValueType
	// Elem is the element type when Type is TypeArray.
	Elem ValueType
	v    any
}

// Any returns the value as the Go type described on [Value].
func (v Value) Any() any { return v.v }

// Val wraps a Go value of one of the types GGUF can store (see [Value]). It
// panics for any other type: that is a programming error, not bad input.
func Val(x any) Value {
	switch x := x.(type) {
	case uint8:
		return Value{Type: TypeUint8, v: x}
	case int8:
		return Value{Type: TypeInt8, v: x}
	case uint16:
		return Value{Type: TypeUint16, v: x}
	case int16:
		return Value{Type: TypeInt16, v: x}
	case uint32:
		return Value{Type: TypeUint32, v: x}
	case int32:
		return Value{Type: TypeInt32, v: x}
	case float32:
		return Value{Type: TypeFloat32, v: x}
	case bool:
		return Value{Type: TypeBool, v: x}
	case string:
		return Value{Type: TypeString, v: x}
	case uint64:
		return Value{Type: TypeUint64, v: x}
	case int64:
		return Value{Type: TypeInt64, v: x}
	case float64:
		return Value{Type: TypeFloat64, v: x}
	case []uint8:
		return Value{Type: TypeArray, Elem: TypeUint8, v: x}
	case []int8:
		return Value{Type: TypeArray, Elem: TypeInt8, v: x}
	case []uint16:
		return Value{Type: TypeArray, Elem: TypeUint16, v: x}
	case []int16:
		return Value{Type: TypeArray, Elem: TypeInt16, v: x}
	case []uint32:
		return Value{Type: TypeArray, Elem: TypeUint32, v: x}
	case []int32:
		return Value{Type: TypeArray, Elem: TypeInt32, v: x}
	case []float32:
		return Value{Type: TypeArray, Elem: TypeFloat32, v: x}
	case []bool:
		return Value{Type: TypeArray, Elem: TypeBool, v: x}
	case []string:
		return Value{Type: TypeArray, Elem: TypeString, v: x}
	case []uint64:
		return Value{Type: TypeArray, Elem: TypeUint64, v: x}
	case []int64:
		return Value{Type: TypeArray, Elem: TypeInt64, v: x}
	case []float64:
		return Value{Type: TypeArray, Elem: TypeFloat64, v: x}
	case []Value:
		return Value{Type: TypeArray, Elem: TypeArray, v: x}
	}
	panic(fmt.Sprintf("gguf: Val of unsupported type %T", x))
}

// Len is the number of elements of an array value, 0 for a scalar.
func (v Value) Len() int {
	switch a := v.v.(type) {
	case []uint8:
		return len(a)
	case []int8:
		return len(a)
	case []uint16:
		return len(a)
	case []int16:
		return len(a)
	case []uint32:
		return len(a)
	case []int32:
		return len(a)
	case []float32:
		return len(a)
	case []bool:
		return len(a)
	case []string:
		return len(a)
	case []uint64:
		return len(a)
	case []int64:
		return len(a)
	case []float64:
		return len(a)
	case []Value:
		return len(a)
	}
	return 0
}

// Int returns an integer scalar as int64. ok is false for other types and for
// a uint64 too large for int64.
func (v Value) Int() (int64, bool) {
	switch x := v.v.(type) {
	case uint8:
		return int64(x), true
	case int8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case int16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	}
	return 0, false
}

// Float returns a numeric scalar (float or integer) as float64.
func (v Value) Float() (float64, bool) {
	switch x := v.v.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	case uint64:
		return float64(x), true
	}
	if i, ok := v.Int(); ok {
		return float64(i), true
	}
	return 0, false
}

// String returns a readable form of the value, shortening long arrays.
func (v Value) String() string {
	if v.Type == TypeArray {
		n := v.Len()
		if n > 8 {
			return fmt.Sprintf("[%s × %d]", v.Elem, n)
		}
	}
	if s, ok := v.v.(string); ok {
		if len(s) > 60 {
			s = s[:60] + "…"
		}
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v.v)
}

// ints converts an integer array to []int64.
func (v Value) ints() ([]int64, bool) {
	var out []int64
	switch a := v.v.(type) {
	case []uint8:
		out = make([]int64, len(a))
		for i, x := range a {
			out[i] = int64(x)
		}
	case []int8:
		out = make([]int64, len(a))
		for i, x := range a {
			out[i] = int64(x)
		}
	case []uint16:
		out = make([]int64, len(a))
		for i, x := range a {
			out[i] = int64(x)
		}
	case []int16:
		out = make([]int64, len(a))
		for i, x := range a {
			out[i] = int64(x)
		}
	case []uint32:
		out = make([]int64, len(a))
		for i, x := range a {
			out[i] = int64(x)
		}
	case []int32:
		out = make([]int64, len(a))
		for i, x := range a {
			out[i] = int64(x)
		}
	case []int64:
		out = a
	case []uint64:
		out = make([]int64, len(a))
		for i, x := range a {
			if x > math.MaxInt64 {
				return nil, false
			}
			out[i] = int64(x)
		}
	default:
		return nil, false
	}
	return out, true
}
