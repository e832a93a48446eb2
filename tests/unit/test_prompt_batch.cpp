// Reading a --prompts file: plain and JSON lines, seeds and names, and lines that cannot be read.
#include <gtest/gtest.h>

#include <fstream>

#include "test_support.h"
#include "tide/pipeline/prompt_batch.h"
#include "tide/runtime/error.h"

namespace {
using namespace tide;

TEST(PromptBatch, PlainAndJsonLines) {
  tide::testing::TempDir dir;
  std::ofstream(dir / "p.txt") << "  a cat  \n# skipped\n\n{\"prompt\": \"a dog\", \"steps\": 3, \"negative_prompt\": \"x\"}\n"
                                  "{\"prompt\": \"b\", \"name\": \"bee\", \"seed\": 7}\n{\"prompt\": \"c\", \"steps\": \"many\"}\n"
                                  "{\"steps\": 2}\n{\"prompt\": \"d\", \"name\": \"bee\"}\n{\"prompt\": \"e\", \"name\": \"../x\"}\n";
  pipeline::GenerationRequest base;
  base.seed = 100;
  base.steps = 20;
  const auto items = pipeline::read_prompt_batch(dir / "p.txt", base);
  ASSERT_EQ(items.size(), 7u);
  EXPECT_EQ(items[0].request.prompt, "a cat");
  EXPECT_EQ(items[0].name, "00000");
  EXPECT_EQ(items[0].request.seed, 100u);
  EXPECT_EQ(items[0].line, 1);
  EXPECT_EQ(items[1].request.prompt, "a dog");
  EXPECT_EQ(items[1].request.steps, 3);
  EXPECT_EQ(items[1].request.seed, 101u);
  EXPECT_EQ(*items[1].request.negative_prompt, "x");
  EXPECT_EQ(items[1].line, 4);
  EXPECT_EQ(items[2].name, "bee");
  EXPECT_EQ(items[2].request.seed, 7u);
  EXPECT_EQ(items[2].request.steps, 20);
  EXPECT_NE(items[3].error.find("\"steps\" has the wrong type"), std::string::npos) << items[3].error;
  EXPECT_NE(items[4].error.find("no \"prompt\""), std::string::npos) << items[4].error;
  EXPECT_NE(items[5].error.find("already used by line 5"), std::string::npos) << items[5].error;
  EXPECT_NE(items[6].error.find("\"name\" must be"), std::string::npos) << items[6].error;
  for (int i : {0, 1, 2}) EXPECT_TRUE(items[i].error.empty()) << items[i].error;
  EXPECT_THROW(pipeline::read_prompt_batch(dir / "missing.txt", base), Error);
}

TEST(PromptBatch, OutputNames) {
  pipeline::BatchItem item;
  item.name = "00003";
  EXPECT_EQ(pipeline::batch_outputs(item, "d"), (std::vector<std::filesystem::path>{"d/00003.png"}));
  item.request.num_images = 2;
  EXPECT_EQ(pipeline::batch_outputs(item, "d"), (std::vector<std::filesystem::path>{"d/00003-0.png", "d/00003-1.png"}));
}

}  // namespace
