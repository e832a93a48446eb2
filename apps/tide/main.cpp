// tide: Stable Diffusion text-to-image and Textual Inversion in one binary.
#include <iostream>

int main(int argc, char** argv) {
  std::cout << "tide\n";
  return 0;
}
