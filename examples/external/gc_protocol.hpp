// gc_protocol.hpp: gradcheck's external-layer protocol, version 1, for C++17 clients.
//
// Header-only, standard library only: copy it next to your layer. The protocol is described in
// docs/external-protocol.md; this header speaks its "binary" array encoding (raw little-endian
// float64, row-major). The C header gc_protocol.h does the same for C.
//
//   gc::Channel channel;                       std::cin and std::cout
//   if (!channel.handshake()) return 2;        once, at start-up
//   while (auto request = channel.read()) {    one request at a time; none after 'quit'
//       request->verb, request->field("seed"), request->option("kernel", 3),
//       request->array("x")                    an Array: shape and row-major values
//       channel.send(gc::Reply().field("output_shape 3 4 6 6").array("W", weights));
//       channel.fail("message");               or an error reply (the client stays ready)
//   }
//
// A stream that breaks the protocol throws gc::ProtocolError: the client cannot recover, so it
// should say why on stderr and exit. stdout carries the protocol and nothing else.
#ifndef GC_PROTOCOL_HPP
#define GC_PROTOCOL_HPP

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <numeric>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace gc {

constexpr int kVersion = 1;

// A broken stream: the client cannot answer any more and should exit.
class ProtocolError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// An array of float64 values in row-major order (the last index varies fastest).
struct Array {
    std::vector<long> shape;
    std::vector<double> values;

    Array() = default;
    explicit Array(std::vector<long> dims)
        : shape(std::move(dims)), values(static_cast<std::size_t>(count(shape)), 0.0) {}

    static long count(const std::vector<long>& dims) {
        return std::accumulate(dims.begin(), dims.end(), 1L, std::multiplies<long>());
    }
};

// One request: its verb, field lines, build options and arrays.
class Message {
  public:
    std::string verb;
    std::map<std::string, std::string> fields;   // "seed" -> "1234567"
    std::map<std::string, std::string> options;  // from "option NAME VALUE": "kernel" -> "3"
    std::map<std::string, Array> arrays;

    // The text after a field's name, if the request has that field.
    std::optional<std::string> field(const std::string& name) const {
        auto found = fields.find(name);
        if (found == fields.end()) return std::nullopt;
        return found->second;
    }

    // An integer option, or fallback when absent; std::invalid_argument when not an integer.
    long option(const std::string& name, long fallback) const {
        auto found = options.find(name);
        if (found == options.end()) return fallback;
        std::istringstream text(found->second);
        long value = 0;
        if (!(text >> value) || !(text >> std::ws).eof())
            throw std::invalid_argument("option " + name + " must be an integer, got '" +
                                        found->second + "'");
        return value;
    }

    // An array of the request, if it has one of that name.
    const Array* array(const std::string& name) const {
        auto found = arrays.find(name);
        return found == arrays.end() ? nullptr : &found->second;
    }
};

// An 'ok' reply under construction: field lines, then arrays, written in that order.
class Reply {
  public:
    Reply& field(std::string line) {
        fields_.push_back(std::move(line));
        return *this;
    }
    Reply& array(std::string name, Array values) {
        arrays_.emplace_back(std::move(name), std::move(values));
        return *this;
    }

  private:
    friend class Channel;
    std::vector<std::string> fields_;
    std::vector<std::pair<std::string, Array>> arrays_;
};

class Channel {
  public:
    explicit Channel(std::istream& in = std::cin, std::ostream& out = std::cout)
        : in_(in), out_(out) {}

    // Answers gradcheck's greeting; false when gradcheck speaks another version.
    bool handshake() {
        std::string line;
        if (!read_line(line)) return false;
        std::istringstream words(line);
        std::string magic;
        int version = 0;
        if (!(words >> magic >> version) || magic != "gradcheck-external" || version != kVersion)
            return false;
        out_ << "gradcheck-external " << kVersion << " binary\n" << std::flush;
        return true;
    }

    // The next request; std::nullopt after 'quit' or at the end of input (gradcheck has gone).
    std::optional<Message> read() {
        Message message;
        std::string line;
        if (!read_line(line)) return std::nullopt;
        std::istringstream(line) >> message.verb;
        if (message.verb == "quit") return std::nullopt;
        while (read_line(line)) {
            if (line == "end") return message;
            std::istringstream words(line);
            std::string name;
            words >> name;
            if (name == "array") {
                if (!read_array(words, line, message)) return std::nullopt;
            } else if (name == "option") {
                std::string option;
                words >> option >> std::ws;
                std::getline(words, message.options[option]);
            } else {
                words >> std::ws;
                std::getline(words, message.fields[name]);
            }
        }
        return std::nullopt;  // end of input in the middle of a request
    }

    void send(const Reply& reply) {
        out_ << "ok\n";
        for (const auto& line : reply.fields_) out_ << line << '\n';
        for (const auto& [name, array] : reply.arrays_) write_array(name, array);
        out_ << "end\n" << std::flush;
    }

    void fail(const std::string& message) {
        std::string line = message;
        for (char& c : line)
            if (c == '\n' || c == '\r') c = ' ';  // one line: a newline would end the reply
        out_ << "error " << line << '\n' << std::flush;
    }

  private:
    std::istream& in_;
    std::ostream& out_;

    bool read_line(std::string& line) {
        if (!std::getline(in_, line)) return false;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return true;
    }

    static bool little_endian() {
        const std::uint16_t one = 1;
        unsigned char first = 0;
        std::memcpy(&first, &one, 1);
        return first == 1;
    }

    static void swap_bytes(std::vector<double>& values) {
        for (double& value : values) {
            unsigned char bytes[sizeof(double)];
            std::memcpy(bytes, &value, sizeof bytes);
            for (std::size_t k = 0; k < sizeof bytes / 2; ++k)
                std::swap(bytes[k], bytes[sizeof bytes - 1 - k]);
            std::memcpy(&value, bytes, sizeof bytes);
        }
    }

    // "array NAME NDIM D1 .. Dn" has been read into words; the values follow it. False at the
    // end of input.
    bool read_array(std::istringstream& words, const std::string& line, Message& message) {
        std::string name;
        int ndim = -1;
        Array array;
        words >> name >> ndim;
        for (int d = 0; d < ndim && words; ++d) {
            long size = -1;
            words >> size;
            array.shape.push_back(size);
        }
        const bool sizes_valid = std::all_of(array.shape.begin(), array.shape.end(),
                                             [](long size) { return size >= 0; });
        if (!words || ndim < 0 || static_cast<int>(array.shape.size()) != ndim || !sizes_valid)
            throw ProtocolError("bad array line '" + line + "'");
        array.values.resize(static_cast<std::size_t>(Array::count(array.shape)));
        const auto bytes = static_cast<std::streamsize>(array.values.size() * sizeof(double));
        if (!in_.read(reinterpret_cast<char*>(array.values.data()), bytes)) return false;
        if (!little_endian()) swap_bytes(array.values);
        message.arrays[name] = std::move(array);
        return true;
    }

    void write_array(const std::string& name, const Array& array) {
        out_ << "array " << name << ' ' << array.shape.size();
        for (long size : array.shape) out_ << ' ' << size;
        out_ << '\n';
        std::vector<double> swapped;
        const std::vector<double>* values = &array.values;
        if (!little_endian()) {
            swapped = array.values;
            swap_bytes(swapped);
            values = &swapped;
        }
        out_.write(reinterpret_cast<const char*>(values->data()),
                   static_cast<std::streamsize>(values->size() * sizeof(double)));
    }
};

}  // namespace gc

#endif  // GC_PROTOCOL_HPP
