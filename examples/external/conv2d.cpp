// conv2d.cpp: a 2-D convolution layer (stride 1, zero padding) served to gradcheck over the
// external-layer protocol, version 1. C++17, standard library only.
//
//   g++ -O2 -std=c++17 -o conv2d_cpp conv2d.cpp     (or: make -C examples/external conv2d_cpp)
//   ./conv2d_cpp            the correct layer
//   ./conv2d_cpp --buggy    its buggy twin
//
// Shapes (per request, batch N first, row-major):
//   x (N, C, H, W), W (F, C, K, K), b (F), y (N, F, H + 2P - K + 1, W + 2P - K + 1)
//   y[n][f][i][j] = b[f] + sum over c, u, v of W[f][c][u][v] * x[n][c][i + u - P][j + v - P]
// (x is zero outside its bounds). Options: filters F (required), kernel K (default 3),
// padding P (default 0).
//
// The buggy twin has the indexing bug of the hand-written C++ convolution in the motivating
// report R3: its kernel-gradient loop adds the patch of kernel element (u, v) into the gradient
// of the mirrored element (K-1-u, K-1-v). Its input and bias gradients are right, so gradcheck
// must blame dL/dW of this layer.
#include <cmath>
#include <cstdint>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "gc_protocol.hpp"

namespace {

// splitmix64 with Box-Muller: the same seed gives the same weights with any compiler and
// standard library (std::normal_distribution's algorithm is left to the implementation).
class Normal {
  public:
    explicit Normal(std::uint64_t seed) : state_(seed) {}

    double operator()() {
        const double u1 = uniform();
        const double u2 = uniform();
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    }

  private:
    std::uint64_t state_;

    double uniform() {  // in (0, 1): log(u1) stays finite
        std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        return (static_cast<double>(z >> 11) + 0.5) / 9007199254740992.0;
    }
};

struct Gradients {
    gc::Array input, weights, bias;
};

class Conv2D {
  public:
    // The layer a build request describes; std::invalid_argument for shapes or options it
    // cannot serve.
    static Conv2D from_build(const gc::Message& request, bool buggy) {
        std::istringstream shape(request.field("input_shape").value_or(""));
        long ndim = 0, channels = 0, height = 0, width = 0;
        if (!(shape >> ndim >> channels >> height >> width) || ndim != 3)
            throw std::invalid_argument("conv2d needs a (channels, height, width) input, got "
                                        "input_shape '" +
                                        request.field("input_shape").value_or("") + "'");
        const long filters = request.option("filters", 0);
        const long kernel = request.option("kernel", 3);
        const long padding = request.option("padding", 0);
        if (filters < 1 || kernel < 1 || padding < 0)
            throw std::invalid_argument(
                "options: filters >= 1 (required), kernel >= 1, padding >= 0");
        Conv2D layer(channels, height, width, filters, kernel, padding, buggy);
        if (layer.out_height_ < 1 || layer.out_width_ < 1)
            throw std::invalid_argument("kernel " + std::to_string(kernel) +
                                        " is larger than the padded input " +
                                        std::to_string(height + 2 * padding) + "x" +
                                        std::to_string(width + 2 * padding));
        return layer;
    }

    gc::Reply build_reply(std::uint64_t seed) const {
        Normal normal(seed);
        gc::Array weights({filters_, channels_, kernel_, kernel_});
        gc::Array bias({filters_});
        const double scale = 1.0 / std::sqrt(static_cast<double>(channels_ * kernel_ * kernel_));
        for (double& w : weights.values) w = scale * normal();
        for (double& b : bias.values) b = 0.1 * normal();
        return gc::Reply()
            .field("output_shape 3 " + std::to_string(filters_) + " " +
                   std::to_string(out_height_) + " " + std::to_string(out_width_))
            .array("W", std::move(weights))
            .array("b", std::move(bias));
    }

    gc::Array forward(const gc::Array& x, const gc::Array& weights, const gc::Array& bias) const {
        const long batch = x.shape[0];
        gc::Array y({batch, filters_, out_height_, out_width_});
        for (long n = 0; n < batch; ++n)
            for (long f = 0; f < filters_; ++f)
                for (long i = 0; i < out_height_; ++i)
                    for (long j = 0; j < out_width_; ++j) {
                        double sum = bias.values[f];
                        for (long c = 0; c < channels_; ++c)
                            for (long u = 0; u < kernel_; ++u)
                                for (long v = 0; v < kernel_; ++v) {
                                    const long row = i + u - padding_, col = j + v - padding_;
                                    if (inside(row, col))
                                        sum += weights.values[weight_at(f, c, u, v)] *
                                               x.values[input_at(n, c, row, col)];
                                }
                        y.values[output_at(n, f, i, j)] = sum;
                    }
        return y;
    }

    Gradients backward(const gc::Array& x, const gc::Array& weights,
                       const gc::Array& grad_out) const {
        const long batch = x.shape[0];
        Gradients grads{gc::Array(x.shape), gc::Array(weights.shape), gc::Array({filters_})};
        for (long n = 0; n < batch; ++n)
            for (long f = 0; f < filters_; ++f)
                for (long i = 0; i < out_height_; ++i)
                    for (long j = 0; j < out_width_; ++j) {
                        const double g = grad_out.values[output_at(n, f, i, j)];
                        grads.bias.values[f] += g;
                        for (long c = 0; c < channels_; ++c)
                            for (long u = 0; u < kernel_; ++u)
                                for (long v = 0; v < kernel_; ++v) {
                                    const long row = i + u - padding_, col = j + v - padding_;
                                    if (!inside(row, col)) continue;
                                    const double patch = x.values[input_at(n, c, row, col)];
                                    grads.weights.values[kernel_gradient_at(f, c, u, v)] +=
                                        g * patch;
                                    grads.input.values[input_at(n, c, row, col)] +=
                                        g * weights.values[weight_at(f, c, u, v)];
                                }
                    }
        return grads;
    }

    // std::invalid_argument unless the request carries x (N, C, H, W), W and b of this layer
    // (and grad_out (N, F, HO, WO) when with_grad_out).
    void check_arrays(const gc::Message& request, bool with_grad_out) const {
        const gc::Array* x = request.array("x");
        const gc::Array* weights = request.array("W");
        const gc::Array* bias = request.array("b");
        const bool inputs_ok =
            x && weights && bias && x->shape.size() == 4 && x->shape[1] == channels_ &&
            x->shape[2] == height_ && x->shape[3] == width_ &&
            weights->shape == std::vector<long>{filters_, channels_, kernel_, kernel_} &&
            bias->shape == std::vector<long>{filters_};
        if (!inputs_ok)
            throw std::invalid_argument(request.verb + " needs arrays x (N, " +
                                        std::to_string(channels_) + ", " +
                                        std::to_string(height_) + ", " + std::to_string(width_) +
                                        "), W and b of this layer's shapes");
        const gc::Array* grad_out = request.array("grad_out");
        if (with_grad_out &&
            (!grad_out || grad_out->shape != std::vector<long>{x->shape[0], filters_,
                                                               out_height_, out_width_}))
            throw std::invalid_argument("backward needs grad_out (N, " +
                                        std::to_string(filters_) + ", " +
                                        std::to_string(out_height_) + ", " +
                                        std::to_string(out_width_) + ")");
    }

  private:
    long channels_, height_, width_, filters_, kernel_, padding_, out_height_, out_width_;
    bool buggy_;

    Conv2D(long channels, long height, long width, long filters, long kernel, long padding,
           bool buggy)
        : channels_(channels), height_(height), width_(width), filters_(filters),
          kernel_(kernel), padding_(padding), out_height_(height + 2 * padding - kernel + 1),
          out_width_(width + 2 * padding - kernel + 1), buggy_(buggy) {}

    bool inside(long row, long col) const {
        return row >= 0 && row < height_ && col >= 0 && col < width_;
    }
    std::size_t input_at(long n, long c, long row, long col) const {
        return static_cast<std::size_t>(((n * channels_ + c) * height_ + row) * width_ + col);
    }
    std::size_t weight_at(long f, long c, long u, long v) const {
        return static_cast<std::size_t>(((f * channels_ + c) * kernel_ + u) * kernel_ + v);
    }
    std::size_t output_at(long n, long f, long i, long j) const {
        return static_cast<std::size_t>(((n * filters_ + f) * out_height_ + i) * out_width_ + j);
    }
    // Where the kernel gradient of element (u, v) is accumulated.
    std::size_t kernel_gradient_at(long f, long c, long u, long v) const {
        if (buggy_) return weight_at(f, c, kernel_ - 1 - u, kernel_ - 1 - v);  // BUG: mirrored
        return weight_at(f, c, u, v);
    }
};

// Answers one request; a request the layer cannot serve gets an error reply.
void serve(gc::Channel& channel, const gc::Message& request, std::optional<Conv2D>& layer,
           bool buggy) {
    try {
        if (request.verb == "build") {
            layer = Conv2D::from_build(request, buggy);
            channel.send(layer->build_reply(std::stoull(request.field("seed").value_or("0"))));
        } else if (request.verb == "forward" || request.verb == "backward") {
            if (!layer) throw std::invalid_argument(request.verb + " before build");
            const bool backward = request.verb == "backward";
            layer->check_arrays(request, backward);
            const gc::Array& x = *request.array("x");
            const gc::Array& weights = *request.array("W");
            if (backward) {
                Gradients grads = layer->backward(x, weights, *request.array("grad_out"));
                channel.send(gc::Reply()
                                 .array("grad_x", std::move(grads.input))
                                 .array("W", std::move(grads.weights))
                                 .array("b", std::move(grads.bias)));
            } else {
                channel.send(gc::Reply().array("y", layer->forward(x, weights,
                                                                    *request.array("b"))));
            }
        } else {
            channel.fail("unknown request '" + request.verb + "'");
        }
    } catch (const std::logic_error& error) {  // invalid_argument, and stoull's out_of_range
        channel.fail(error.what());
    }
}

}  // namespace

int main(int argc, char** argv) {
    const std::string flag = argc > 1 ? argv[1] : "";
    if (argc > 2 || (argc == 2 && flag != "--buggy")) {
        std::cerr << "usage: conv2d_cpp [--buggy]\n";
        return 2;
    }
    gc::Channel channel;
    try {
        if (!channel.handshake()) {
            std::cerr << "conv2d_cpp: gradcheck speaks another protocol version than "
                      << gc::kVersion << '\n';
            return 2;
        }
        std::optional<Conv2D> layer;
        while (auto request = channel.read()) serve(channel, *request, layer, flag == "--buggy");
    } catch (const gc::ProtocolError& error) {
        std::cerr << "conv2d_cpp: " << error.what() << '\n';  // stdout carries the protocol
        return 2;
    }
    return 0;
}
