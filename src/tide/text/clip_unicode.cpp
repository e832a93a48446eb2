#include "tide/text/clip_unicode.h"

#include <re2/re2.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <unordered_map>

namespace tide::text::unicode {
namespace {

// Tables generated from Python 3.11's unicodedata (Unicode 14.0), the source of str.lower() and
// unicodedata.normalize("NFC") that transformers runs.

// Simple lower-case mappings: cp in [lo, hi] with (cp - lo) % stride == 0 maps to cp + delta.
struct LowerRun {
  char32_t lo, hi;
  int32_t delta, stride;
};
const LowerRun kLowerRuns[] = {
    {0x41, 0x5A, 32, 1}, {0xC0, 0xD6, 32, 1}, {0xD8, 0xDE, 32, 1}, {0x100, 0x12E, 1, 2}, {0x132, 0x136, 1, 2},
    {0x139, 0x147, 1, 2}, {0x14A, 0x176, 1, 2}, {0x178, 0x178, -121, 1}, {0x179, 0x17D, 1, 2}, {0x181, 0x181, 210, 1},
    {0x182, 0x184, 1, 2}, {0x186, 0x186, 206, 1}, {0x187, 0x187, 1, 1}, {0x189, 0x18A, 205, 1}, {0x18B, 0x18B, 1, 1},
    {0x18E, 0x18E, 79, 1}, {0x18F, 0x18F, 202, 1}, {0x190, 0x190, 203, 1}, {0x191, 0x191, 1, 1},
    {0x193, 0x193, 205, 1}, {0x194, 0x194, 207, 1}, {0x196, 0x196, 211, 1}, {0x197, 0x197, 209, 1},
    {0x198, 0x198, 1, 1}, {0x19C, 0x19C, 211, 1}, {0x19D, 0x19D, 213, 1}, {0x19F, 0x19F, 214, 1}, {0x1A0, 0x1A4, 1, 2},
    {0x1A6, 0x1A6, 218, 1}, {0x1A7, 0x1A7, 1, 1}, {0x1A9, 0x1A9, 218, 1}, {0x1AC, 0x1AC, 1, 1}, {0x1AE, 0x1AE, 218, 1},
    {0x1AF, 0x1AF, 1, 1}, {0x1B1, 0x1B2, 217, 1}, {0x1B3, 0x1B5, 1, 2}, {0x1B7, 0x1B7, 219, 1}, {0x1B8, 0x1B8, 1, 1},
    {0x1BC, 0x1BC, 1, 1}, {0x1C4, 0x1C4, 2, 1}, {0x1C5, 0x1C5, 1, 1}, {0x1C7, 0x1C7, 2, 1}, {0x1C8, 0x1C8, 1, 1},
    {0x1CA, 0x1CA, 2, 1}, {0x1CB, 0x1DB, 1, 2}, {0x1DE, 0x1EE, 1, 2}, {0x1F1, 0x1F1, 2, 1}, {0x1F2, 0x1F4, 1, 2},
    {0x1F6, 0x1F6, -97, 1}, {0x1F7, 0x1F7, -56, 1}, {0x1F8, 0x21E, 1, 2}, {0x220, 0x220, -130, 1},
    {0x222, 0x232, 1, 2}, {0x23A, 0x23A, 10795, 1}, {0x23B, 0x23B, 1, 1}, {0x23D, 0x23D, -163, 1},
    {0x23E, 0x23E, 10792, 1}, {0x241, 0x241, 1, 1}, {0x243, 0x243, -195, 1}, {0x244, 0x244, 69, 1},
    {0x245, 0x245, 71, 1}, {0x246, 0x24E, 1, 2}, {0x370, 0x372, 1, 2}, {0x376, 0x376, 1, 1}, {0x37F, 0x37F, 116, 1},
    {0x386, 0x386, 38, 1}, {0x388, 0x38A, 37, 1}, {0x38C, 0x38C, 64, 1}, {0x38E, 0x38F, 63, 1}, {0x391, 0x3A1, 32, 1},
    {0x3A3, 0x3AB, 32, 1}, {0x3CF, 0x3CF, 8, 1}, {0x3D8, 0x3EE, 1, 2}, {0x3F4, 0x3F4, -60, 1}, {0x3F7, 0x3F7, 1, 1},
    {0x3F9, 0x3F9, -7, 1}, {0x3FA, 0x3FA, 1, 1}, {0x3FD, 0x3FF, -130, 1}, {0x400, 0x40F, 80, 1}, {0x410, 0x42F, 32, 1},
    {0x460, 0x480, 1, 2}, {0x48A, 0x4BE, 1, 2}, {0x4C0, 0x4C0, 15, 1}, {0x4C1, 0x4CD, 1, 2}, {0x4D0, 0x52E, 1, 2},
    {0x531, 0x556, 48, 1}, {0x10A0, 0x10C5, 7264, 1}, {0x10C7, 0x10C7, 7264, 1}, {0x10CD, 0x10CD, 7264, 1},
    {0x13A0, 0x13EF, 38864, 1}, {0x13F0, 0x13F5, 8, 1}, {0x1C90, 0x1CBA, -3008, 1}, {0x1CBD, 0x1CBF, -3008, 1},
    {0x1E00, 0x1E94, 1, 2}, {0x1E9E, 0x1E9E, -7615, 1}, {0x1EA0, 0x1EFE, 1, 2}, {0x1F08, 0x1F0F, -8, 1},
    {0x1F18, 0x1F1D, -8, 1}, {0x1F28, 0x1F2F, -8, 1}, {0x1F38, 0x1F3F, -8, 1}, {0x1F48, 0x1F4D, -8, 1},
    {0x1F59, 0x1F5F, -8, 2}, {0x1F68, 0x1F6F, -8, 1}, {0x1F88, 0x1F8F, -8, 1}, {0x1F98, 0x1F9F, -8, 1},
    {0x1FA8, 0x1FAF, -8, 1}, {0x1FB8, 0x1FB9, -8, 1}, {0x1FBA, 0x1FBB, -74, 1}, {0x1FBC, 0x1FBC, -9, 1},
    {0x1FC8, 0x1FCB, -86, 1}, {0x1FCC, 0x1FCC, -9, 1}, {0x1FD8, 0x1FD9, -8, 1}, {0x1FDA, 0x1FDB, -100, 1},
    {0x1FE8, 0x1FE9, -8, 1}, {0x1FEA, 0x1FEB, -112, 1}, {0x1FEC, 0x1FEC, -7, 1}, {0x1FF8, 0x1FF9, -128, 1},
    {0x1FFA, 0x1FFB, -126, 1}, {0x1FFC, 0x1FFC, -9, 1}, {0x2126, 0x2126, -7517, 1}, {0x212A, 0x212A, -8383, 1},
    {0x212B, 0x212B, -8262, 1}, {0x2132, 0x2132, 28, 1}, {0x2160, 0x216F, 16, 1}, {0x2183, 0x2183, 1, 1},
    {0x24B6, 0x24CF, 26, 1}, {0x2C00, 0x2C2F, 48, 1}, {0x2C60, 0x2C60, 1, 1}, {0x2C62, 0x2C62, -10743, 1},
    {0x2C63, 0x2C63, -3814, 1}, {0x2C64, 0x2C64, -10727, 1}, {0x2C67, 0x2C6B, 1, 2}, {0x2C6D, 0x2C6D, -10780, 1},
    {0x2C6E, 0x2C6E, -10749, 1}, {0x2C6F, 0x2C6F, -10783, 1}, {0x2C70, 0x2C70, -10782, 1}, {0x2C72, 0x2C72, 1, 1},
    {0x2C75, 0x2C75, 1, 1}, {0x2C7E, 0x2C7F, -10815, 1}, {0x2C80, 0x2CE2, 1, 2}, {0x2CEB, 0x2CED, 1, 2},
    {0x2CF2, 0x2CF2, 1, 1}, {0xA640, 0xA66C, 1, 2}, {0xA680, 0xA69A, 1, 2}, {0xA722, 0xA72E, 1, 2},
    {0xA732, 0xA76E, 1, 2}, {0xA779, 0xA77B, 1, 2}, {0xA77D, 0xA77D, -35332, 1}, {0xA77E, 0xA786, 1, 2},
    {0xA78B, 0xA78B, 1, 1}, {0xA78D, 0xA78D, -42280, 1}, {0xA790, 0xA792, 1, 2}, {0xA796, 0xA7A8, 1, 2},
    {0xA7AA, 0xA7AA, -42308, 1}, {0xA7AB, 0xA7AB, -42319, 1}, {0xA7AC, 0xA7AC, -42315, 1}, {0xA7AD, 0xA7AD, -42305, 1},
    {0xA7AE, 0xA7AE, -42308, 1}, {0xA7B0, 0xA7B0, -42258, 1}, {0xA7B1, 0xA7B1, -42282, 1}, {0xA7B2, 0xA7B2, -42261, 1},
    {0xA7B3, 0xA7B3, 928, 1}, {0xA7B4, 0xA7C2, 1, 2}, {0xA7C4, 0xA7C4, -48, 1}, {0xA7C5, 0xA7C5, -42307, 1},
    {0xA7C6, 0xA7C6, -35384, 1}, {0xA7C7, 0xA7C9, 1, 2}, {0xA7D0, 0xA7D0, 1, 1}, {0xA7D6, 0xA7D8, 1, 2},
    {0xA7F5, 0xA7F5, 1, 1}, {0xFF21, 0xFF3A, 32, 1}, {0x10400, 0x10427, 40, 1}, {0x104B0, 0x104D3, 40, 1},
    {0x10570, 0x1057A, 39, 1}, {0x1057C, 0x1058A, 39, 1}, {0x1058C, 0x10592, 39, 1}, {0x10594, 0x10595, 39, 1},
    {0x10C80, 0x10CB2, 64, 1}, {0x118A0, 0x118BF, 32, 1}, {0x16E40, 0x16E5F, 32, 1}, {0x1E900, 0x1E921, 34, 1},
};

// Primary compositions base + mark -> composed (Latin, Greek, Cyrillic, kana voicing marks):
// per mark, pairs of (base, composed) characters.
struct Composition {
  char32_t mark;
  const char32_t* pairs;
};
const Composition kCompositions[] = {
    {0x300, U"AÀEÈIÌOÒUÙaàeèiìoòuùÜǛüǜNǸnǹЕЀИЍеѐиѝĒḔēḕŌṐōṑWẀwẁÂẦâầĂẰăằÊỀêề"
             U"ÔỒôồƠỜơờƯỪưừYỲyỳἀἂἁἃἈἊἉἋἐἒἑἓἘἚἙἛἠἢἡἣἨἪἩἫἰἲἱἳἸἺἹἻὀὂὁὃὈὊὉὋὐὒὑὓ"
             U"ὙὛὠὢὡὣὨὪὩὫαὰεὲηὴιὶοὸυὺωὼΑᾺΕῈΗῊ᾿῍ϊῒΙῚ῾῝ϋῢΥῪ¨῭ΟῸΩῺ"},
    {0x301, U"AÁEÉIÍOÓUÚYÝaáeéiíoóuúyýCĆcćLĹlĺNŃnńRŔrŕSŚsśZŹzźÜǗüǘGǴgǵÅǺåǻ"
             U"ÆǼæǽØǾøǿ¨΅ΑΆΕΈΗΉΙΊΟΌΥΎΩΏϊΐαάεέηήιίϋΰοόυύωώϒϓГЃКЌгѓкќÇḈçḉĒḖēḗ"
             U"ÏḮïḯKḰkḱMḾmḿÕṌõṍŌṒōṓPṔpṕŨṸũṹWẂwẃÂẤâấĂẮăắÊẾêếÔỐôốƠỚơớƯỨưứἀἄἁἅ"
             U"ἈἌἉἍἐἔἑἕἘἜἙἝἠἤἡἥἨἬἩἭἰἴἱἵἸἼἹἽὀὄὁὅὈὌὉὍὐὔὑὕὙὝὠὤὡὥὨὬὩὭ᾿῎῾῞"},
    {0x302, U"AÂEÊIÎOÔUÛaâeêiîoôuûCĈcĉGĜgĝHĤhĥJĴjĵSŜsŝWŴwŵYŶyŷZẐzẑẠẬạậẸỆẹệ"
             U"ỌỘọộ"},
    {0x303, U"AÃNÑOÕaãnñoõIĨiĩUŨuũVṼvṽÂẪâẫĂẴăẵEẼeẽÊỄêễÔỖôỗƠỠơỡƯỮưữYỸyỹ"},
    {0x304, U"AĀaāEĒeēIĪiīOŌoōUŪuūÜǕüǖÄǞäǟȦǠȧǡÆǢæǣǪǬǫǭÖȪöȫÕȬõȭȮȰȯȱYȲyȳИӢиӣ"
             U"УӮуӯGḠgḡḶḸḷḹṚṜṛṝαᾱΑᾹιῑΙῙυῡΥῩ"},
    {0x306, U"AĂaăEĔeĕGĞgğIĬiĭOŎoŏUŬuŭУЎИЙийуўЖӁжӂАӐаӑЕӖеӗȨḜȩḝẠẶạặαᾰΑᾸιῐΙῘ"
             U"υῠΥῨ"},
    {0x307, U"CĊcċEĖeėGĠgġIİZŻzżAȦaȧOȮoȯBḂbḃDḊdḋFḞfḟHḢhḣMṀmṁNṄnṅPṖpṗRṘrṙSṠ"
             U"sṡŚṤśṥŠṦšṧṢṨṣṩTṪtṫWẆwẇXẊxẋYẎyẏſẛ"},
    {0x308, U"AÄEËIÏOÖUÜaäeëiïoöuüyÿYŸΙΪΥΫιϊυϋϒϔЕЁІЇеёіїАӒаӓӘӚәӛЖӜжӝЗӞзӟИӤ"
             U"иӥОӦоӧӨӪөӫЭӬэӭУӰуӱЧӴчӵЫӸыӹHḦhḧÕṎõṏŪṺūṻWẄwẅXẌxẍtẗ"},
    {0x309, U"AẢaảÂẨâẩĂẲăẳEẺeẻÊỂêểIỈiỉOỎoỏÔỔôổƠỞơởUỦuủƯỬưửYỶyỷ"},
    {0x30A, U"AÅaåUŮuůwẘyẙ"},
    {0x30B, U"OŐoőUŰuűУӲуӳ"},
    {0x30C, U"CČcčDĎdďEĚeěLĽlľNŇnňRŘrřSŠsšTŤtťZŽzžAǍaǎIǏiǐOǑoǒUǓuǔÜǙüǚGǦgǧ"
             U"KǨkǩƷǮʒǯjǰHȞhȟ"},
    {0x30F, U"AȀaȁEȄeȅIȈiȉOȌoȍRȐrȑUȔuȕѴѶѵѷ"},
    {0x311, U"AȂaȃEȆeȇIȊiȋOȎoȏRȒrȓUȖuȗ"},
    {0x313, U"αἀΑἈεἐΕἘηἠΗἨιἰΙἸοὀΟὈυὐωὠΩὨρῤ"},
    {0x314, U"αἁΑἉεἑΕἙηἡΗἩιἱΙἹοὁΟὉυὑΥὙωὡΩὩρῥΡῬ"},
    {0x31B, U"OƠoơUƯuư"},
    {0x323, U"BḄbḅDḌdḍHḤhḥKḲkḳLḶlḷMṂmṃNṆnṇRṚrṛSṢsṣTṬtṭVṾvṿWẈwẉZẒzẓAẠaạEẸeẹ"
             U"IỊiịOỌoọƠỢơợUỤuụƯỰưựYỴyỵ"},
    {0x324, U"UṲuṳ"},
    {0x325, U"AḀaḁ"},
    {0x326, U"SȘsșTȚtț"},
    {0x327, U"CÇcçGĢgģKĶkķLĻlļNŅnņRŖrŗSŞsşTŢtţEȨeȩDḐdḑHḨhḩ"},
    {0x328, U"AĄaąEĘeęIĮiįUŲuųOǪoǫ"},
    {0x32D, U"DḒdḓEḘeḙLḼlḽNṊnṋTṰtṱUṶuṷ"},
    {0x32E, U"HḪhḫ"},
    {0x330, U"EḚeḛIḬiḭUṴuṵ"},
    {0x331, U"BḆbḇDḎdḏKḴkḵLḺlḻNṈnṉRṞrṟTṮtṯZẔzẕhẖ"},
    {0x342, U"ἀἆἁἇἈἎἉἏἠἦἡἧἨἮἩἯἰἶἱἷἸἾἹἿὐὖὑὗὙὟὠὦὡὧὨὮὩὯαᾶ¨῁ηῆ᾿῏ιῖϊῗ῾῟υῦϋῧωῶ"},
    {0x345, U"ἀᾀἁᾁἂᾂἃᾃἄᾄἅᾅἆᾆἇᾇἈᾈἉᾉἊᾊἋᾋἌᾌἍᾍἎᾎἏᾏἠᾐἡᾑἢᾒἣᾓἤᾔἥᾕἦᾖἧᾗἨᾘἩᾙἪᾚἫᾛἬᾜἭᾝ"
             U"ἮᾞἯᾟὠᾠὡᾡὢᾢὣᾣὤᾤὥᾥὦᾦὧᾧὨᾨὩᾩὪᾪὫᾫὬᾬὭᾭὮᾮὯᾯὰᾲαᾳάᾴᾶᾷΑᾼὴῂηῃήῄῆῇΗῌὼῲωῳ"
             U"ώῴῶῷΩῼ"},
    {0x3099, U"かがきぎくぐけげこごさざしじすずせぜそぞただちぢつづてでとどはばひびふぶへべほぼうゔゝゞカガキギクグケゲコゴサザシジスズ"
             U"セゼソゾタダチヂツヅテデトドハバヒビフブヘベホボウヴワヷヰヸヱヹヲヺヽヾ"},
    {0x309A, U"はぱひぴふぷへぺほぽハパヒピフプヘペホポ"},
};

// Canonical decompositions that are not such a pair (singletons like KELVIN SIGN -> K, Greek oxia).
struct Expansion {
  char32_t from;
  const char32_t* to;
};
const Expansion kExpansions[] = {
    {0x340, U"\x300"}, {0x341, U"\x301"}, {0x343, U"\x313"}, {0x344, U"\x308\x301"}, {0x374, U"\x2B9"},
    {0x37E, U"\x3B"}, {0x387, U"\xB7"}, {0x1F71, U"\x3AC"}, {0x1F73, U"\x3AD"}, {0x1F75, U"\x3AE"},
    {0x1F77, U"\x3AF"}, {0x1F79, U"\x3CC"}, {0x1F7B, U"\x3CD"}, {0x1F7D, U"\x3CE"}, {0x1FBB, U"\x386"},
    {0x1FBE, U"\x3B9"}, {0x1FC9, U"\x388"}, {0x1FCB, U"\x389"}, {0x1FD3, U"\x390"}, {0x1FDB, U"\x38A"},
    {0x1FE3, U"\x3B0"}, {0x1FEB, U"\x38E"}, {0x1FEE, U"\x385"}, {0x1FEF, U"\x60"}, {0x1FF9, U"\x38C"},
    {0x1FFB, U"\x38F"}, {0x1FFD, U"\xB4"}, {0x2126, U"\x3A9"}, {0x212A, U"\x4B"}, {0x212B, U"\xC5"},
    {0x2329, U"\x3008"}, {0x232A, U"\x3009"},
};

// Canonical combining classes of the combining-mark blocks; other characters count as starters (0).
struct CombiningRun {
  char32_t lo, hi;
  int ccc;
};
const CombiningRun kCombiningRuns[] = {
    {0x300, 0x314, 230}, {0x315, 0x315, 232}, {0x316, 0x319, 220}, {0x31A, 0x31A, 232}, {0x31B, 0x31B, 216},
    {0x31C, 0x320, 220}, {0x321, 0x322, 202}, {0x323, 0x326, 220}, {0x327, 0x328, 202}, {0x329, 0x333, 220},
    {0x334, 0x338, 1}, {0x339, 0x33C, 220}, {0x33D, 0x344, 230}, {0x345, 0x345, 240}, {0x346, 0x346, 230},
    {0x347, 0x349, 220}, {0x34A, 0x34C, 230}, {0x34D, 0x34E, 220}, {0x350, 0x352, 230}, {0x353, 0x356, 220},
    {0x357, 0x357, 230}, {0x358, 0x358, 232}, {0x359, 0x35A, 220}, {0x35B, 0x35B, 230}, {0x35C, 0x35C, 233},
    {0x35D, 0x35E, 234}, {0x35F, 0x35F, 233}, {0x360, 0x361, 234}, {0x362, 0x362, 233}, {0x363, 0x36F, 230},
    {0x483, 0x487, 230}, {0x1AB0, 0x1AB4, 230}, {0x1AB5, 0x1ABA, 220}, {0x1ABB, 0x1ABC, 230},
    {0x1ABD, 0x1ABD, 220}, {0x1ABF, 0x1AC0, 220}, {0x1AC1, 0x1AC2, 230}, {0x1AC3, 0x1AC4, 220},
    {0x1AC5, 0x1AC9, 230}, {0x1ACA, 0x1ACA, 220}, {0x1ACB, 0x1ACE, 230}, {0x1DC0, 0x1DC1, 230},
    {0x1DC2, 0x1DC2, 220}, {0x1DC3, 0x1DC9, 230}, {0x1DCA, 0x1DCA, 220}, {0x1DCB, 0x1DCC, 230},
    {0x1DCD, 0x1DCD, 234}, {0x1DCE, 0x1DCE, 214}, {0x1DCF, 0x1DCF, 220}, {0x1DD0, 0x1DD0, 202},
    {0x1DD1, 0x1DF5, 230}, {0x1DF6, 0x1DF6, 232}, {0x1DF7, 0x1DF8, 228}, {0x1DF9, 0x1DF9, 220},
    {0x1DFA, 0x1DFA, 218}, {0x1DFB, 0x1DFB, 230}, {0x1DFC, 0x1DFC, 233}, {0x1DFD, 0x1DFD, 220},
    {0x1DFE, 0x1DFE, 230}, {0x1DFF, 0x1DFF, 220}, {0x20D0, 0x20D1, 230}, {0x20D2, 0x20D3, 1},
    {0x20D4, 0x20D7, 230}, {0x20D8, 0x20DA, 1}, {0x20DB, 0x20DC, 230}, {0x20E1, 0x20E1, 230},
    {0x20E5, 0x20E6, 1}, {0x20E7, 0x20E7, 230}, {0x20E8, 0x20E8, 220}, {0x20E9, 0x20E9, 230},
    {0x20EA, 0x20EB, 1}, {0x20EC, 0x20EF, 220}, {0x20F0, 0x20F0, 230}, {0x3099, 0x309A, 8},
    {0xFE20, 0xFE26, 230}, {0xFE27, 0xFE2D, 220}, {0xFE2E, 0xFE2F, 230},
};

int combining_class(char32_t c) {
  if (c < 0x300) return 0;
  auto it = std::upper_bound(std::begin(kCombiningRuns), std::end(kCombiningRuns), c,
                             [](char32_t v, const CombiningRun& r) { return v < r.lo; });
  return (it != std::begin(kCombiningRuns) && c <= (it - 1)->hi) ? (it - 1)->ccc : 0;
}

constexpr char32_t kHangulBase = 0xAC00, kJamoL = 0x1100, kJamoV = 0x1161, kJamoT = 0x11A7;
constexpr int kCountV = 21, kCountT = 28, kCountSyllables = 19 * 21 * 28;

struct NormalizationTables {
  std::unordered_map<uint64_t, char32_t> compose;                       // (base << 32 | mark) -> composed
  std::unordered_map<char32_t, std::pair<char32_t, char32_t>> decompose;  // composed -> (base, mark)
  std::unordered_map<char32_t, const char32_t*> expand;
};

const NormalizationTables& tables() {
  static const NormalizationTables t = [] {
    NormalizationTables n;
    for (const Composition& c : kCompositions)
      for (const char32_t* p = c.pairs; p[0] && p[1]; p += 2) {
        n.compose[(uint64_t(p[0]) << 32) | c.mark] = p[1];
        n.decompose[p[1]] = {p[0], c.mark};
      }
    for (const Expansion& e : kExpansions) n.expand[e.from] = e.to;
    return n;
  }();
  return t;
}

void decompose(char32_t c, std::u32string& out) {
  if (c >= kHangulBase && c < kHangulBase + kCountSyllables) {
    const char32_t s = c - kHangulBase;
    out += kJamoL + s / (kCountV * kCountT);
    out += kJamoV + (s % (kCountV * kCountT)) / kCountT;
    if (s % kCountT) out += kJamoT + s % kCountT;
    return;
  }
  const NormalizationTables& t = tables();
  if (auto it = t.expand.find(c); it != t.expand.end()) {
    for (const char32_t* p = it->second; *p; ++p) decompose(*p, out);
  } else if (auto it = t.decompose.find(c); it != t.decompose.end()) {
    decompose(it->second.first, out);
    out += it->second.second;
  } else {
    out += c;
  }
}

// The primary composite of a starter and the next character, or 0.
char32_t compose(char32_t a, char32_t b) {
  if (a >= kJamoL && a < kJamoL + 19 && b >= kJamoV && b < kJamoV + kCountV)
    return kHangulBase + ((a - kJamoL) * kCountV + (b - kJamoV)) * kCountT;
  if (a >= kHangulBase && a < kHangulBase + kCountSyllables && (a - kHangulBase) % kCountT == 0 && b > kJamoT &&
      b < kJamoT + kCountT)
    return a + (b - kJamoT);
  const auto& table = tables().compose;
  auto it = table.find((uint64_t(a) << 32) | b);
  return it == table.end() ? 0 : it->second;
}

// Python's Cased and Case_Ignorable properties (the final-sigma context): general categories
// plus the characters Python adds (circled and squared letters, Roman numerals, apostrophes, dots).
bool matches(const RE2& re, char32_t c) {
  std::string s;
  append_utf8(s, c);
  return RE2::FullMatch(s, re);
}
bool is_cased(char32_t c) {
  static const RE2 re(
      R"([\p{Lu}\p{Ll}\p{Lt}\x{AA}\x{BA}\x{295}\x{2160}-\x{217F}\x{24B6}-\x{24E9}\x{1F130}-\x{1F149})"
      R"(\x{1F150}-\x{1F169}\x{1F170}-\x{1F189}])");
  return matches(re, c);
}
bool is_case_ignorable(char32_t c) {
  static const RE2 re(
      R"([\p{Mn}\p{Me}\p{Cf}\p{Lm}\p{Sk}'.:\x{B7}\x{387}\x{55F}\x{5F4}\x{2018}\x{2019}\x{2024}\x{2027})"
      R"(\x{FE13}\x{FE52}\x{FE55}\x{FF07}\x{FF0E}\x{FF1A}\x{1171E}])");
  return matches(re, c);
}

}  // namespace

char32_t to_lower(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  auto it = std::upper_bound(std::begin(kLowerRuns), std::end(kLowerRuns), c,
                             [](char32_t v, const LowerRun& r) { return v < r.lo; });
  if (it == std::begin(kLowerRuns)) return c;
  const LowerRun& r = *(it - 1);
  if (c > r.hi || (c - r.lo) % r.stride != 0) return c;
  return static_cast<char32_t>(static_cast<int32_t>(c) + r.delta);
}

std::u32string python_lower(const std::u32string& word) {
  std::u32string out;
  out.reserve(word.size());
  for (size_t i = 0; i < word.size(); ++i) {
    const char32_t c = word[i];
    if (c == 0x130) {  // LATIN CAPITAL LETTER I WITH DOT ABOVE -> i + COMBINING DOT ABOVE
      out += U'i';
      out += char32_t(0x307);
    } else if (c == 0x3A3) {  // final sigma: after a cased letter and not before one
      size_t j = i;
      while (j > 0 && is_case_ignorable(word[j - 1])) --j;
      bool final_sigma = j > 0 && is_cased(word[j - 1]);
      size_t k = i + 1;
      while (k < word.size() && is_case_ignorable(word[k])) ++k;
      if (k < word.size() && is_cased(word[k])) final_sigma = false;
      out += final_sigma ? char32_t(0x3C2) : char32_t(0x3C3);
    } else {
      out += to_lower(c);
    }
  }
  return out;
}

std::u32string nfc(const std::u32string& text) {
  // Canonical decomposition, then marks sorted by combining class (stable), then composition.
  std::u32string d;
  d.reserve(text.size());
  for (const char32_t c : text) decompose(c, d);
  for (size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < d.size() && combining_class(d[end]) != 0) ++end;
    std::stable_sort(d.begin() + i, d.begin() + end,
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = end;
  }
  // A character composes with the last starter unless a character in between blocks it
  // (a starter, or a mark of the same or a higher class).
  std::u32string out;
  out.reserve(d.size());
  size_t starter = std::u32string::npos;
  int last_class = -1;
  for (const char32_t c : d) {
    const int cls = combining_class(c);
    if (starter != std::u32string::npos && (last_class < cls || last_class == 0)) {
      if (const char32_t composed = compose(out[starter], c)) {
        out[starter] = composed;
        continue;
      }
    }
    if (cls == 0) starter = out.size();
    last_class = cls;
    out += c;
  }
  return out;
}

bool is_cjk(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

std::u32string decode_utf8(const std::string& text) {
  static const char32_t kMin[] = {0, 0x80, 0x800, 0x10000};  // shortest form per extra byte count
  std::u32string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto b = static_cast<unsigned char>(text[i]);
    const int n = b < 0x80 ? 0 : (b >> 5) == 0x6 ? 1 : (b >> 4) == 0xE ? 2 : (b >> 3) == 0x1E ? 3 : -1;
    bool ok = n >= 0 && i + n < text.size();
    char32_t c = n == 0 ? b : n == 1 ? (b & 0x1F) : n == 2 ? (b & 0x0F) : (b & 0x07);
    for (int k = 1; ok && k <= n; ++k) {
      const auto cb = static_cast<unsigned char>(text[i + k]);
      ok = (cb & 0xC0) == 0x80;
      c = (c << 6) | (cb & 0x3F);
    }
    ok = ok && c >= kMin[n] && c <= 0x10FFFF && !(c >= 0xD800 && c <= 0xDFFF);
    out += ok ? c : char32_t(0xFFFD);
    i += ok ? n + 1 : 1;
  }
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

std::string encode_utf8(const std::u32string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char32_t c : text) append_utf8(out, c);
  return out;
}

}  // namespace tide::text::unicode
