// Raw little-endian arrays in and out of the emulation harnesses (written and read by tests/emulator.py).
#pragma once

#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace simt {

template <typename T>
std::vector<T> load(const std::string& dir, const char* name, size_t count) {
  std::vector<T> v(count);
  std::ifstream f(dir + "/" + name + ".bin", std::ios::binary);
  if (!f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(count * sizeof(T))))
    throw std::runtime_error("cannot read " + std::to_string(count * sizeof(T)) + " bytes of " + name);
  return v;
}

template <typename T>
void save(const std::string& dir, const char* name, const std::vector<T>& v) {
  std::ofstream f(dir + "/" + name + ".bin", std::ios::binary);
  if (!f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T))))
    throw std::runtime_error(std::string("cannot write ") + name);
}

}  // namespace simt
